package io.moeprep.spark.exec;

import com.codahale.metrics.Counter;
import com.codahale.metrics.Gauge;
import com.codahale.metrics.MetricRegistry;
import com.codahale.metrics.Timer;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.Backends;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.cuda.DeviceOutOfMemoryException;
import io.moeprep.kernels.cuda.MoePrepCudaException;
import io.moeprep.spark.spec.RunSettings;
import io.moeprep.spark.spec.TuningSettings;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import java.util.function.Function;
import org.apache.spark.TaskContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The per-JVM state of the tasks: the GPU probe (once), the kernels per (backend choice, device,
 * tuning), the executor's default GPU (set once by the executor plugin), and the metrics that the
 * executor plugin registers. A task's GPU is its own (its {@code TaskContext}'s resources), never
 * state shared with other tasks. Tasks use it whether or not the plugin is loaded.
 */
public final class ExecutorRuntime {
  private static final Logger LOG = LoggerFactory.getLogger(ExecutorRuntime.class);

  /** Output rows permuted, padding included. */
  public static final Counter ROWS_PERMUTED = new Counter();

  /** Bytes of permuted hidden data produced. */
  public static final Counter BYTES_PERMUTED = new Counter();

  /** Tokens combined by unpermute. */
  public static final Counter ROWS_COMBINED = new Counter();

  /**
   * Time spent in the kernels (permute and unpermute calls; on the RAPIDS columnar plan, the
   * permute of one batch for every rank, the cudf assembly of its output included).
   */
  public static final Timer KERNEL_TIME = new Timer();

  /** The sum of {@link #KERNEL_TIME}'s durations, in nanoseconds (a timer keeps no exact sum). */
  public static final Counter KERNEL_NANOS = new Counter();

  /** Batches run on the GPU. */
  public static final Counter GPU_BATCHES = new Counter();

  /** Batches run on the CPU. */
  public static final Counter CPU_BATCHES = new Counter();

  /** Times backend auto fell back to the CPU; the reason is {@link #fallbackReason()}. */
  public static final Counter FALLBACKS = new Counter();

  /** Batches that ran out of device memory and ran again on the CPU. */
  public static final Counter OOM_FALLBACKS = new Counter();

  private static final AtomicReference<CudaSupport.Probe> PROBE = new AtomicReference<>();
  private static final AtomicReference<String> FALLBACK_REASON = new AtomicReference<>("");

  /** The executor's GPU ({@code spark.executor.resource.gpu}), the fallback of a task's own. */
  private static final AtomicInteger EXECUTOR_DEVICE = new AtomicInteger(-1);

  /** The backend chosen per (choice, device, tuning), once per JVM. */
  private static final KernelSelection SELECTION = new KernelSelection(Backends::choose);

  private ExecutorRuntime() {}

  /**
   * Probes the GPU once per JVM. Never throws: a probe that fails in any way (no driver, a linkage
   * error) counts as "no GPU" with its reason.
   */
  public static CudaSupport.Probe probe() {
    CudaSupport.Probe p = PROBE.get();
    if (p == null) {
      try {
        p = CudaSupport.probe();
      } catch (Throwable t) { // a CPU-only executor must not fail here, whatever the cause
        p = new CudaSupport.Probe(false, "the GPU probe failed: " + t);
      }
      PROBE.compareAndSet(null, p);
      p = PROBE.get();
    }
    return p;
  }

  /**
   * Records the GPU (ordinal) Spark assigned to this executor ({@code
   * spark.executor.resource.gpu}), the default of tasks that have none of their own; set once by
   * the executor plugin. {@code -1} for none.
   */
  public static void useExecutorDevice(int ordinal) {
    EXECUTOR_DEVICE.set(ordinal);
  }

  /** The executor's GPU ordinal, or {@code -1}. */
  public static int executorDevice() {
    return EXECUTOR_DEVICE.get();
  }

  /**
   * The GPU of one task: the first {@code gpu} address of its own resources ({@code
   * spark.task.resource.gpu.*}), else the executor's ({@link #executorDevice()}), else {@code -1}.
   */
  public static int taskDevice(TaskContext ctx) {
    return KernelSelection.taskDevice(ctx, executorDevice());
  }

  /** Why backend auto runs on the CPU here, or an empty string. */
  public static String fallbackReason() {
    return FALLBACK_REASON.get();
  }

  /**
   * The kernels of one task: for a backend choice with the job's tuning, on the task's own GPU
   * ({@link #taskDevice}: its resources, else the executor's, else the CUDA backend's device 0).
   * The backend is chosen once per (choice, device, tuning) by {@link Backends#choose}, the one
   * place where {@code AUTO} falls back to the CPU and logs why; the tuning goes down to it as
   * {@link TuningSettings#kernelTuning()}. Each call that runs on such a fallback is counted in
   * {@link #FALLBACKS}, its reason kept for {@link #fallbackReason()}. {@code CUDA} fails with the
   * reason the GPU cannot run.
   *
   * @param ctx the task, or {@code null} outside a task (then the executor's GPU)
   */
  public static MoeKernels kernels(BackendChoice choice, TuningSettings tuning, TaskContext ctx) {
    return kernels(choice, tuning, taskDevice(ctx));
  }

  /** {@link #kernels(BackendChoice, TuningSettings, TaskContext)} of the calling thread's task. */
  public static MoeKernels kernels(BackendChoice choice, TuningSettings tuning) {
    return kernels(choice, tuning, TaskContext.get());
  }

  /**
   * The kernels for a backend choice with the job's tuning on GPU {@code device} ({@code -1}: 0).
   */
  public static MoeKernels kernels(BackendChoice choice, TuningSettings tuning, int device) {
    Backends.Selection s = SELECTION.select(choice, device, tuning);
    if (s.fellBack()) {
      countFallback(s.fallbackReason());
    }
    return MoeKernels.on(s.backend());
  }

  /**
   * Runs one batch's kernel call {@code op} on {@code kernels}, timed and counted, under the GPU
   * settings of {@code settings}: its device memory limit applies to the backend's device; a batch
   * that runs out of device memory runs again on the CPU when {@code settings.oomFallback()}
   * (logged with {@code where} and the reason, counted in {@link #OOM_FALLBACKS} and {@link
   * #FALLBACKS}; the CPU gives the same bytes); any other device failure fails with {@code where}
   * (such as {@code "rank 3, batch 17"}) in front of the kernel, grid and driver error.
   */
  public static <T> T runBatch(
      MoeKernels kernels, RunSettings settings, String where, Function<MoeKernels, T> op) {
    return runBatch(kernels, settings, where, op, backend -> {});
  }

  /**
   * {@link #runBatch(MoeKernels, RunSettings, String, Function)}, telling {@code ranOn} the name of
   * the backend that ran the batch ({@code cuda}, or {@code cpu}, also after running out of device
   * memory) once it ran.
   */
  public static <T> T runBatch(
      MoeKernels kernels,
      RunSettings settings,
      String where,
      Function<MoeKernels, T> op,
      Consumer<String> ranOn) {
    kernels.backend().limitDeviceMemory(settings.gpuMemoryLimit());
    try {
      T result = timed(kernels, op);
      ranOn.accept(kernels.backend().name());
      return result;
    } catch (DeviceOutOfMemoryException e) {
      if (!settings.oomFallback()) {
        throw e.in(where);
      }
      String reason = where + ": " + e.getMessage();
      OOM_FALLBACKS.inc();
      countFallback(reason);
      LOG.warn("moeprep: {}; running this batch again on the CPU", reason);
      MoeKernels cpu = kernels(BackendChoice.CPU, settings.tuning(), -1);
      T result = timed(cpu, op);
      ranOn.accept(cpu.backend().name());
      return result;
    } catch (MoePrepCudaException e) {
      throw e.in(where);
    }
  }

  private static <T> T timed(MoeKernels k, Function<MoeKernels, T> op) {
    long start = System.nanoTime();
    T result = op.apply(k);
    kernelTime(System.nanoTime() - start);
    countBatch(k);
    return result;
  }

  /** Counts one batch on the backend that ran it. */
  private static void countBatch(MoeKernels k) {
    if ("cuda".equals(k.backend().name())) {
      GPU_BATCHES.inc();
    } else {
      CPU_BATCHES.inc();
    }
  }

  /** Records one kernel call's duration in {@link #KERNEL_TIME} and {@link #KERNEL_NANOS}. */
  public static void kernelTime(long nanos) {
    KERNEL_TIME.update(nanos, TimeUnit.NANOSECONDS);
    KERNEL_NANOS.inc(nanos);
  }

  /** Counts permuted output rows, padding included, and their hidden bytes. */
  public static void countPermuted(long rows, long rowBytes) {
    ROWS_PERMUTED.inc(rows);
    BYTES_PERMUTED.inc(rows * rowBytes);
  }

  /**
   * Counts (rank, batch)es that the RAPIDS route permuted on the GPU, outside {@link #runBatch},
   * with their output rows.
   */
  public static void countGpuPermuted(long batches, long rows, long rowBytes) {
    GPU_BATCHES.inc(batches);
    countPermuted(rows, rowBytes);
  }

  /** Counts one fallback to the CPU and keeps its reason for the fallbackReason gauge. */
  private static void countFallback(String reason) {
    FALLBACKS.inc();
    FALLBACK_REASON.set(reason);
  }

  /** Registers the metrics under {@code moeprep.*} in a registry (the plugin's). */
  public static void registerMetrics(MetricRegistry registry) {
    registry.register("rowsPermuted", ROWS_PERMUTED);
    registry.register("bytesPermuted", BYTES_PERMUTED);
    registry.register("rowsCombined", ROWS_COMBINED);
    registry.register("kernelTime", KERNEL_TIME);
    registry.register("kernelNanos", KERNEL_NANOS);
    registry.register("gpuBatches", GPU_BATCHES);
    registry.register("cpuBatches", CPU_BATCHES);
    registry.register("fallbacks", FALLBACKS);
    registry.register("oomFallbacks", OOM_FALLBACKS);
    registry.register("fallbackReason", (Gauge<String>) FALLBACK_REASON::get);
    registry.register("device", (Gauge<Integer>) EXECUTOR_DEVICE::get);
  }
}
