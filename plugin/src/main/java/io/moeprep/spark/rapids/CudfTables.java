package io.moeprep.spark.rapids;

import ai.rapids.cudf.Table;
import io.moeprep.spark.spec.PermuteSpec;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;

/**
 * The cudf route of a permute's dispatch plan: the RAPIDS Accelerator hands each rank partition
 * over as cudf tables ({@code ColumnarRdd}), and a task per partition permutes them on the GPU
 * ({@link CudfRankBatches}). The RAPIDS jar is reached by reflection: it is not a compile
 * dependency.
 */
public final class CudfTables {
  private CudfTables() {}

  /**
   * The permuted batches of {@code dispatched} (the rank-partitioned {@link
   * io.moeprep.spark.spec.DispatchChunk} rows of a permute planned with {@code spec}) as cudf
   * tables, at most {@code maxPieceBytes} hidden bytes per table.
   *
   * @throws IllegalArgumentException when {@code maxPieceBytes} is outside {@code [one row, 2^31 -
   *     1]}
   */
  public static JavaRDD<Table> permute(
      Dataset<Row> dispatched, PermuteSpec spec, boolean hasProbs, long maxPieceBytes) {
    new CudfPermuter(
        spec.shape().hidden(), spec.shape().dtype(), spec.shape().topK(), maxPieceBytes);
    RDD<Table> rdd = columnarRdd(dispatched);
    return rdd.toJavaRDD().mapPartitions(new CudfRankTask(spec, hasProbs, maxPieceBytes));
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
