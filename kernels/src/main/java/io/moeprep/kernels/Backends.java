package io.moeprep.kernels;

import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.CudaSupport;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.logging.Logger;

/**
 * Chooses a backend at run time. This is the one place where backend {@code auto} falls back to the
 * CPU: it decides, words the reason and logs it (once per process); callers that count fallbacks
 * read the reason from the {@link Selection}.
 */
public final class Backends {
  private static final Logger LOG = Logger.getLogger(Backends.class.getName());
  private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();

  private Backends() {}

  /**
   * A chosen backend and, when backend {@code auto} runs on the CPU, why.
   *
   * @param backend the backend that runs the operations
   * @param fallbackReason why {@code auto} fell back to the CPU, or {@code null} when it did not
   */
  public record Selection(KernelBackend backend, String fallbackReason) {
    /** True when backend {@code auto} fell back to the CPU. */
    public boolean fellBack() {
      return fallbackReason != null;
    }
  }

  /** The backend of {@link #choose choose(choice, -1, KernelTuning.DEFAULT)}. */
  public static KernelBackend select(BackendChoice choice) {
    return choose(choice, -1).backend();
  }

  /** {@link #choose(BackendChoice, int, KernelTuning)} with the shipped tuning. */
  public static Selection choose(BackendChoice choice, int device) {
    return choose(choice, device, KernelTuning.DEFAULT);
  }

  /**
   * {@code CPU}: the CPU backend. {@code CUDA}: the CUDA backend on {@code device}, or an {@link
   * IllegalStateException} with the reason it cannot run. {@code AUTO}: CUDA when it can run and
   * its backend starts, else the CPU with the reason, logged once per process ({@code moeprep:
   * backend auto runs on the CPU: ...}).
   *
   * <p>Everything the backend needs is passed here: the device and the {@link KernelTuning} (the
   * CPU backend's threads, the CUDA launches' knobs); no backend reads a system property.
   *
   * @param device the GPU ordinal, or {@code -1} for device 0
   * @param tuning the backends' internal tuning
   */
  public static Selection choose(BackendChoice choice, int device, KernelTuning tuning) {
    return switch (choice) {
      case CPU -> new Selection(cpu(tuning), null);
      case CUDA -> new Selection(cuda(device, tuning), null);
      case AUTO -> {
        CudaSupport.Probe probe = CudaSupport.probe();
        if (!probe.available()) {
          yield fallback(probe.reason(), tuning);
        }
        try {
          yield new Selection(cuda(device, tuning), null);
        } catch (RuntimeException | LinkageError e) {
          yield fallback("the CUDA backend failed to start: " + e, tuning);
        }
      }
    };
  }

  /** The CUDA backend on {@code device} ({@code < 0}: device 0); fails with the reason. */
  private static KernelBackend cuda(int device, KernelTuning tuning) {
    return CudaSupport.backend(Math.max(0, device), tuning);
  }

  /** The shared CPU backend for the shipped thread count, else one on its own pool. */
  private static KernelBackend cpu(KernelTuning tuning) {
    return tuning.cpuThreads() == KernelTuning.DEFAULT.cpuThreads()
        ? CpuBackend.INSTANCE
        : CpuBackend.with(tuning);
  }

  private static Selection fallback(String reason, KernelTuning tuning) {
    if (FALLBACK_LOGGED.compareAndSet(false, true)) {
      LOG.info("moeprep: backend auto runs on the CPU: " + reason);
    }
    return new Selection(cpu(tuning), reason);
  }
}
