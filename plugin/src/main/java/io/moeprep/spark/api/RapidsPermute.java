package io.moeprep.spark.rapids;

import ai.rapids.cudf.Table;
import io.moeprep.spark.api.PermuteOutput;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;

/**
 * The RAPIDS route of a permute: the permuted batches as cudf tables, computed on the GPU from the
 * cudf tables that the RAPIDS Accelerator hands over, without a host round trip of the hidden data.
 *
 * <pre>{@code
 * PermuteOutput out = MoePrep.permute(tokens, spec);         // in a session with RAPIDS active
 * JavaRDD<Table> tables = RapidsPermute.tables(out);         // partition r: rank r's tables
 * tables.foreachPartition(it -> it.forEachRemaining(t -> { try (t) { feed(t); } }));
 * }</pre>
 *
 * <p>Each table holds consecutive output rows of one (rank, batch) in the columns of {@link
 * CudfPermuter#COLUMNS} (the {@code ROWS} layout); a batch whose hidden data would pass cudf's
 * 2^31-byte limit per LIST column comes as several tables. As with every RAPIDS {@code
 * ColumnarRdd}, the consumer closes each table, and the RDD must not be shuffled or cached.
 *
 * <p>Only a session whose {@link PermuteOutput#route()} {@link RapidsRoute#usesCudf() uses cudf}
 * gets tables; any other fails with the route's reason, without loading a cudf class. The RAPIDS
 * jar is reached by reflection (it is not a compile dependency); put the MoePrep jar on the same
 * class path as the RAPIDS jar, whose cudf classes the tables are.
 */
public final class RapidsPermute {
  private RapidsPermute() {}

  /** The permuted batches as cudf tables, split at cudf's limit of 2^31 - 1 bytes per column. */
  public static JavaRDD<Table> tables(PermuteOutput out) {
    return tables(out, CudfPermuter.CUDF_MAX_CHILD_BYTES);
  }

  /**
   * As {@link #tables(PermuteOutput)}, with at most {@code maxPieceBytes} hidden bytes per table.
   *
   * @throws IllegalStateException when the session does not run the RAPIDS route, with the reason
   */
  public static JavaRDD<Table> tables(PermuteOutput out, long maxPieceBytes) {
    RapidsRoute route = out.route();
    if (!route.usesCudf()) {
      throw new IllegalStateException(
          "the cudf route is not available in this session: " + route.describe());
    }
    new CudfPermuter(out.spec().hidden(), out.spec().dtype(), out.spec().topK(), maxPieceBytes);
    RDD<Table> rdd = columnarRdd(out.dispatched());
    return rdd.toJavaRDD()
        .mapPartitions(new CudfRankTask(out.spec(), out.hasProbs(), maxPieceBytes));
  }

  /** {@code com.nvidia.spark.rapids.ColumnarRdd.convert(df)}, by reflection. */
  @SuppressWarnings("unchecked")
  static RDD<Table> columnarRdd(Dataset<?> df) {
    ClassLoader cl = Thread.currentThread().getContextClassLoader();
    try {
      Class<?> c = Class.forName(RapidsRoute.COLUMNAR_RDD, true, cl);
      Method convert = c.getMethod("convert", Dataset.class);
      return (RDD<Table>) convert.invoke(null, df);
    } catch (InvocationTargetException e) {
      Throwable cause = e.getCause();
      if (cause instanceof RuntimeException r) {
        throw r;
      }
      throw new IllegalStateException(RapidsRoute.COLUMNAR_RDD + ".convert failed", cause);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(
          RapidsRoute.COLUMNAR_RDD + " is not usable (is the RAPIDS jar on the class path?)", e);
    }
  }
}
