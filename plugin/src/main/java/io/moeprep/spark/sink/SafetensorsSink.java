package io.moeprep.spark.sink;

import java.util.Map;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableProvider;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.sources.DataSourceRegister;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/**
 * The safetensors sink, a Spark DataSource V2 named {@value #FORMAT}: writes a DataFrame of shard
 * rows ({@link ShardSchema#SHARDS}) as one safetensors file per (EP rank, batch), {@code
 * OUT/rank=R/batch=B.safetensors}, through Spark's commit protocol ({@link SinkOutput}): files
 * appear only when the job commits, a retried task never leaves a second copy.
 *
 * <pre>{@code
 * shards.write().format("moeprep-safetensors").mode("overwrite").save("hdfs:///moe/out");
 * }</pre>
 *
 * <p>Modes: {@code append} adds the job's files and fails, before moving any, when one exists
 * already; {@code overwrite} replaces the directory's content once the job has succeeded (a failed
 * job keeps the earlier output). Spark refuses the default mode ({@code errorifexists}) and {@code
 * ignore} for a source like this one. Write options other than {@code path} are set in the Hadoop
 * configuration of the file system (e.g. {@code fs.s3a.endpoint}). No reader: trainers read the
 * files.
 */
public final class SafetensorsSink implements TableProvider, DataSourceRegister {
  /** The short name of the format. */
  public static final String FORMAT = "moeprep-safetensors";

  /** Made by Spark from the registration. */
  public SafetensorsSink() {}

  @Override
  public String shortName() {
    return FORMAT;
  }

  @Override
  public StructType inferSchema(CaseInsensitiveStringMap options) {
    return ShardSchema.SHARDS;
  }

  /** True: the table takes the DataFrame's schema, which {@link ShardSchema} checks. */
  @Override
  public boolean supportsExternalMetadata() {
    return true;
  }

  @Override
  public Table getTable(
      StructType schema, Transform[] partitioning, Map<String, String> properties) {
    if (partitioning.length > 0) {
      throw new IllegalArgumentException(
          "partitionBy is not supported by "
              + FORMAT
              + ": the layout is fixed (OUT/rank=R/batch=B.safetensors)");
    }
    return new SafetensorsTable(schema, properties.get("path"));
  }
}
