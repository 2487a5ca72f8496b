package io.moeprep.spark.rapids;

import ai.rapids.cudf.Table;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.Iterator;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.util.TaskCompletionListener;

/**
 * The task of the RAPIDS route: one rank partition's cudf tables in, its permuted cudf tables out
 * ({@link CudfRankBatches}), on the task thread (so on its per-thread default stream). Leftovers
 * are closed when the task completes, also on failure.
 */
final class CudfRankTask implements FlatMapFunction<Iterator<Table>, Table> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final long maxPieceBytes;

  CudfRankTask(PermuteSpec spec, boolean hasProbs, long maxPieceBytes) {
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.maxPieceBytes = maxPieceBytes;
  }

  @Override
  public Iterator<Table> call(Iterator<Table> in) {
    TaskContext ctx = TaskContext.get();
    // the task's own GPU (its resources), checked against cudf's current device per batch
    CudfRankBatches batches =
        new CudfRankBatches(in, spec, hasProbs, maxPieceBytes, ExecutorRuntime.taskDevice(ctx));
    if (ctx != null) {
      ctx.addTaskCompletionListener(
          (TaskCompletionListener)
              c -> {
                batches.close();
                // the consumer closes the tables it took; count what this task produced
                ExecutorRuntime.countGpuPermuted(
                    batches.batches(), batches.rowsOut(), spec.shape().rowBytes());
              });
    }
    return batches;
  }
}
