package io.moeprep.spark.exec;

import com.codahale.metrics.Counter;
import com.codahale.metrics.Gauge;
import com.codahale.metrics.MetricRegistry;
import com.codahale.metrics.Timer;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.CudaBackend;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.cuda.DeviceOutOfMemoryException;
import io.moeprep.kernels.cuda.MoePrepCudaException;
import io.moeprep.spark.api.PermuteSpec;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The per-JVM state of the tasks: the GPU probe (once), the kernels per backend choice, the device
 * picked from Spark's resource scheduling, and the metrics that {@link
 * io.moeprep.spark.MoePrepPlugin} registers. Tasks use it whether or not the plugin is loaded.
 */
public final class ExecutorRuntime {
  private static final Logger LOG = LoggerFactory.getLogger(ExecutorRuntime.class);

  /** Output rows permuted, padding included. */
  public static final Counter ROWS_PERMUTED = new Counter();

  /** Bytes of permuted hidden data produced. */
  public static final Counter BYTES_PERMUTED = new Counter();

  /** Tokens combined by unpermute. */
  public static final Counter ROWS_COMBINED = new Counter();

  /** Time spent in the kernels (permute and unpermute calls). */
  public static final Timer KERNEL_TIME = new Timer();

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
  private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();
  private static final AtomicInteger DEVICE = new AtomicInteger(-1);
  private static volatile MoeKernels cpu;

  /** The CUDA kernels per device ordinal ({@code -1}: the backend's default device). */
  private static final ConcurrentHashMap<Integer, MoeKernels> GPU = new ConcurrentHashMap<>();

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

  /** Records the GPU (ordinal) Spark assigned to this executor or task; {@code -1} for none. */
  public static void useDevice(int ordinal) {
    DEVICE.set(ordinal);
  }

  /**
   * Records the GPU that Spark's resource scheduling gave a task ({@code
   * spark.task.resource.gpu.*}), if any. Never throws.
   */
  public static void noteTaskDevice(org.apache.spark.TaskContext ctx) {
    try {
      var gpus = ctx.resourcesJMap().get("gpu");
      if (gpus != null && gpus.addresses().length > 0) {
        useDevice(Integer.parseInt(gpus.addresses()[0].trim()));
      }
    } catch (RuntimeException e) {
      LOG.debug("moeprep: no usable gpu address in the task's resources", e);
    }
  }

  /** The GPU ordinal Spark assigned, or {@code -1}. */
  public static int device() {
    return DEVICE.get();
  }

  /** Why backend auto runs on the CPU here, or an empty string. */
  public static String fallbackReason() {
    return FALLBACK_REASON.get();
  }

  /**
   * The kernels for a backend choice. {@code AUTO} falls back to the CPU when the GPU cannot run,
   * logging the reason once and counting every fallback; {@code CUDA} fails with the reason.
   */
  public static MoeKernels kernels(BackendChoice choice) {
    switch (choice) {
      case CPU:
        return cpuKernels();
      case CUDA:
        return gpuKernels();
      default:
        CudaSupport.Probe p = probe();
        if (p.available()) {
          try {
            return gpuKernels();
          } catch (RuntimeException | LinkageError e) {
            fallback("the CUDA backend failed to start: " + e);
            return cpuKernels();
          }
        }
        fallback(p.reason());
        return cpuKernels();
    }
  }

  /**
   * Runs one batch's kernel call {@code op} on {@code kernels}, timed and counted, under the GPU
   * settings of {@code spec}: its device memory limit applies to the GPU; a batch that runs out of
   * device memory runs again on the CPU when {@code spec.oomFallback()} (logged with {@code where}
   * and the reason, counted in {@link #OOM_FALLBACKS} and {@link #FALLBACKS}; the CPU gives the
   * same bytes); any other device failure fails with {@code where} (such as {@code "rank 3, batch
   * 17"}) in front of the kernel, grid and driver error.
   */
  public static <T> T runBatch(
      MoeKernels kernels, PermuteSpec spec, String where, Function<MoeKernels, T> op) {
    if (kernels.backend() instanceof CudaBackend cuda) {
      Long limit = spec.gpuMemoryLimit();
      cuda.device().setMemoryLimit(limit == null ? 0 : limit);
    }
    try {
      return timed(kernels, op);
    } catch (DeviceOutOfMemoryException e) {
      if (Boolean.FALSE.equals(spec.oomFallback())) {
        throw e.in(where);
      }
      String reason = where + ": " + e.getMessage();
      OOM_FALLBACKS.inc();
      countFallback(reason);
      LOG.warn("moeprep: {}; running this batch again on the CPU", reason);
      return timed(cpuKernels(), op);
    } catch (MoePrepCudaException e) {
      throw e.in(where);
    }
  }

  private static <T> T timed(MoeKernels k, Function<MoeKernels, T> op) {
    long start = System.nanoTime();
    T result = op.apply(k);
    KERNEL_TIME.update(System.nanoTime() - start, TimeUnit.NANOSECONDS);
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

  private static void fallback(String reason) {
    countFallback(reason);
    if (FALLBACK_LOGGED.compareAndSet(false, true)) {
      LOG.info("moeprep: backend auto runs on the CPU: {}", reason);
    }
  }

  /** Counts one fallback to the CPU and keeps its reason for the fallbackReason gauge. */
  private static void countFallback(String reason) {
    FALLBACKS.inc();
    FALLBACK_REASON.set(reason);
  }

  private static MoeKernels cpuKernels() {
    MoeKernels k = cpu;
    if (k == null) {
      k = MoeKernels.on(CpuBackend.INSTANCE);
      cpu = k;
    }
    return k;
  }

  /**
   * The CUDA kernels on the GPU Spark assigned ({@link #device()}), or on the backend's default
   * device when Spark assigned none.
   */
  private static MoeKernels gpuKernels() {
    int d = device();
    return GPU.computeIfAbsent(
        d,
        ordinal -> {
          if (ordinal < 0) {
            return MoeKernels.create(BackendChoice.CUDA);
          }
          CudaSupport.backend(); // fails with the probe's reason when CUDA cannot run
          return MoeKernels.on(CudaBackend.on(ordinal));
        });
  }

  /** Registers the metrics under {@code moeprep.*} in a registry (the plugin's). */
  public static void registerMetrics(MetricRegistry registry) {
    registry.register("rowsPermuted", ROWS_PERMUTED);
    registry.register("bytesPermuted", BYTES_PERMUTED);
    registry.register("rowsCombined", ROWS_COMBINED);
    registry.register("kernelTime", KERNEL_TIME);
    registry.register("gpuBatches", GPU_BATCHES);
    registry.register("cpuBatches", CPU_BATCHES);
    registry.register("fallbacks", FALLBACKS);
    registry.register("oomFallbacks", OOM_FALLBACKS);
    registry.register("fallbackReason", (Gauge<String>) FALLBACK_REASON::get);
    registry.register("device", (Gauge<Integer>) DEVICE::get);
  }
}
