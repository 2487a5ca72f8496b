package io.moeprep.spark.exec;

import io.moeprep.kernels.BackendChoice;
import java.io.Serializable;
import java.util.Locale;
import org.apache.spark.SparkContext;
import org.apache.spark.util.LongAccumulator;

/**
 * The counters of one permute or unpermute as named Spark accumulators, shown on the stages of the
 * Spark UI ({@code moeprep.permute.rows}, {@code moeprep.permute.bytes}, {@code
 * moeprep.permute.batches.gpu}, {@code moeprep.permute.batches.cpu}, {@code
 * moeprep.permute.fallbacks}; {@code moeprep.unpermute.*} likewise). They are registered on the
 * driver when the operation is planned and updated by the tasks that run its kernels: a permute's
 * data tasks ({@code data()}, {@code rows()} or {@code packed()}; the row map and tokens per expert
 * run the same kernels again and are not counted), and an unpermute's combine tasks.
 *
 * <p>What a value means, exactly: the sum over the tasks that succeeded. Spark adds a task's
 * updates once when the task succeeds, never for a failed attempt. In a result stage (the data
 * written or collected directly) it adds them once per partition and job, whichever attempt
 * succeeded first; in a stage whose output is shuffled again (an unpermute followed by a
 * repartition) every successful attempt adds, so a task run again (a lost shuffle output,
 * speculation) adds again. Each action that computes the output adds again: a permute's data
 * written twice counts twice. The batches on the GPU and on the CPU add up to the batches run;
 * {@code fallbacks} are the batches of backend {@code auto} or {@code cuda} that ran on the CPU (no
 * usable GPU, or out of device memory).
 */
public final class BatchCounters implements Serializable {
  private static final long serialVersionUID = 1L;

  private final String operation;
  private final BackendChoice asked;
  private final LongAccumulator rows;
  private final LongAccumulator bytes;
  private final LongAccumulator gpuBatches;
  private final LongAccumulator cpuBatches;
  private final LongAccumulator fallbacks;

  private BatchCounters(SparkContext sc, String operation, BackendChoice asked) {
    this.operation = operation;
    this.asked = asked;
    String p = "moeprep." + operation + ".";
    this.rows = sc.longAccumulator(p + "rows");
    this.bytes = sc.longAccumulator(p + "bytes");
    this.gpuBatches = sc.longAccumulator(p + "batches.gpu");
    this.cpuBatches = sc.longAccumulator(p + "batches.cpu");
    this.fallbacks = sc.longAccumulator(p + "fallbacks");
  }

  /**
   * Registers the accumulators of one operation on the driver.
   *
   * @param operation {@code permute} or {@code unpermute}, the accumulators' middle name
   * @param asked the backend choice of the operation (a CPU batch of {@code auto} or {@code cuda}
   *     is a fallback)
   */
  public static BatchCounters register(SparkContext sc, String operation, BackendChoice asked) {
    return new BatchCounters(sc, operation, asked);
  }

  /**
   * Counts one batch in a task: {@code rows} output rows (permute: permuted rows, padding included;
   * unpermute: combined tokens) of {@code bytes} hidden bytes, run on {@code backend} ({@code cuda}
   * or {@code cpu}).
   */
  public void batch(long rows, long bytes, String backend) {
    this.rows.add(rows);
    this.bytes.add(bytes);
    if ("cuda".equals(backend)) {
      gpuBatches.add(1);
    } else {
      cpuBatches.add(1);
      if (asked != BackendChoice.CPU) {
        fallbacks.add(1);
      }
    }
  }

  /** Output rows (permute) or combined tokens (unpermute). */
  public long rows() {
    return rows.value();
  }

  /** Hidden bytes of those rows. */
  public long bytes() {
    return bytes.value();
  }

  /** Batches run on the GPU. */
  public long gpuBatches() {
    return gpuBatches.value();
  }

  /** Batches run on the CPU. */
  public long cpuBatches() {
    return cpuBatches.value();
  }

  /** Batches of backend auto or cuda that ran on the CPU. */
  public long fallbacks() {
    return fallbacks.value();
  }

  /**
   * The values in one line: {@code 14545 rows, 7.1 MiB, 16 batches (gpu 0, cpu 16), 16 fallbacks}.
   */
  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "%s: %d rows, %s, %d batches (gpu %d, cpu %d), %d fallbacks",
        operation,
        rows(),
        bytes(bytes()),
        gpuBatches() + cpuBatches(),
        gpuBatches(),
        cpuBatches(),
        fallbacks());
  }

  /** A byte count for people: {@code 512 B}, {@code 7.1 MiB}, {@code 3.0 GiB}. */
  public static String bytes(long n) {
    if (n < 1024) {
      return n + " B";
    }
    String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = n;
    int u = -1;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
  }
}
