package io.moeprep.kernels;

import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.CudaSupport;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.logging.Logger;

/** Chooses a backend at run time. */
public final class Backends {
  private static final Logger LOG = Logger.getLogger(Backends.class.getName());
  private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();

  private Backends() {}

  /**
   * {@code CPU}: the CPU backend. {@code CUDA}: the CUDA backend, or an {@link
   * IllegalStateException} with the reason it cannot run. {@code AUTO}: CUDA when it can run, else
   * the CPU, logging the reason once per process.
   */
  public static KernelBackend select(BackendChoice choice) {
    return switch (choice) {
      case CPU -> CpuBackend.INSTANCE;
      case CUDA -> CudaSupport.backend();
      case AUTO -> {
        CudaSupport.Probe probe = CudaSupport.probe();
        if (probe.available()) {
          yield CudaSupport.backend();
        }
        if (FALLBACK_LOGGED.compareAndSet(false, true)) {
          LOG.info("moeprep: using the CPU backend: " + probe.reason());
        }
        yield CpuBackend.INSTANCE;
      }
    };
  }
}
