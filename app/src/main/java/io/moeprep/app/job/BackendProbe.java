package io.moeprep.app.job;

import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.RunSettings;
import java.util.Iterator;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.util.CollectionAccumulator;

/**
 * Passes a rank partition's rows through and records, in an accumulator, which backend the rank's
 * task runs its kernels on ({@code rank|backend|executor|fallback reason}): the backend that {@link
 * ExecutorRuntime#kernels} resolves in that executor for the spec's choice, as the permute did.
 */
final class BackendProbe implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private final RunSettings settings;
  private final int rankField;
  private final CollectionAccumulator<String> acc;

  BackendProbe(RunSettings settings, int rankField, CollectionAccumulator<String> acc) {
    this.settings = settings;
    this.rankField = rankField;
    this.acc = acc;
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    if (!in.hasNext()) {
      return in;
    }
    Row first = in.next();
    String backend =
        ExecutorRuntime.kernels(settings.backend(), settings.tuning()).backend().name();
    SparkEnv env = SparkEnv.get();
    String executor = env == null ? "?" : env.executorId();
    acc.add(
        first.getInt(rankField)
            + "|"
            + backend
            + "|"
            + executor
            + "|"
            + ExecutorRuntime.fallbackReason().replace('|', '/'));
    return new Iterator<>() {
      boolean firstPending = true;

      @Override
      public boolean hasNext() {
        return firstPending || in.hasNext();
      }

      @Override
      public Row next() {
        if (firstPending) {
          firstPending = false;
          return first;
        }
        return in.next();
      }
    };
  }
}
