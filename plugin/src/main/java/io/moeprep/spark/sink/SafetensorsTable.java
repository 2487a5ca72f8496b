package io.moeprep.spark.sink;

import java.util.EnumSet;
import java.util.Set;
import org.apache.spark.sql.connector.catalog.SupportsWrite;
import org.apache.spark.sql.connector.catalog.TableCapability;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.WriteBuilder;
import org.apache.spark.sql.types.StructType;

/** The output directory as a write-only table: batch writes, appending or truncating. */
final class SafetensorsTable implements SupportsWrite {
  private final StructType schema;
  private final String path;

  SafetensorsTable(StructType schema, String path) {
    this.schema = schema;
    this.path = path;
  }

  @Override
  public String name() {
    return SafetensorsSink.FORMAT + ":" + path;
  }

  @Override
  public StructType schema() {
    return schema;
  }

  @Override
  public Set<TableCapability> capabilities() {
    return EnumSet.of(TableCapability.BATCH_WRITE, TableCapability.TRUNCATE);
  }

  /**
   * Checks the input's schema against {@link ShardSchema#SHARDS} (before any job runs).
   *
   * @throws IllegalArgumentException naming each missing, extra or mistyped column
   */
  @Override
  public WriteBuilder newWriteBuilder(LogicalWriteInfo info) {
    int[] ordinals = ShardSchema.ordinals(info.schema());
    return new ShardWriteBuilder(info.queryId(), info.options(), ordinals);
  }
}
