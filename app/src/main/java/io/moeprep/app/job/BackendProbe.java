package io.moeprep.app.job;

import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.RunSettings;
import java.util.HashSet;
import java.util.Iterator;
import java.util.Set;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.util.CollectionAccumulator;

/**
 * Passes a partition's rows through and records, in an accumulator, for each rank it holds rows of,
 * which backend the task runs its kernels on ({@code rank|backend|executor|fallback reason}): the
 * backend that {@link ExecutorRuntime#kernels} resolves in that executor for the spec's choice, as
 * the permute did.
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
    String backend =
        ExecutorRuntime.kernels(settings.backend(), settings.tuning()).backend().name();
    SparkEnv env = SparkEnv.get();
    String executor = env == null ? "?" : env.executorId();
    String reason = ExecutorRuntime.fallbackReason().replace('|', '/');
    Set<Integer> seen = new HashSet<>();
    return new Iterator<>() {
      @Override
      public boolean hasNext() {
        return in.hasNext();
      }

      @Override
      public Row next() {
        Row r = in.next();
        if (seen.add(r.getInt(rankField))) {
          acc.add(r.getInt(rankField) + "|" + backend + "|" + executor + "|" + reason);
        }
        return r;
      }
    };
  }
}
