package io.moeprep.kernels.cuda;

import io.moeprep.kernels.contract.KernelBackend;

/** Whether the CUDA backend can run here, and the reason when it cannot. */
public final class CudaSupport {
  private CudaSupport() {}

  /** The outcome of probing for a driver, a device and the fatbin. */
  public record Probe(boolean available, String reason) {}

  /** Probes once per process. */
  public static Probe probe() {
    return new Probe(false, "this build has no CUDA backend");
  }

  /**
   * The CUDA backend.
   *
   * @throws IllegalStateException with the probe's reason when it cannot run
   */
  public static KernelBackend backend() {
    throw new IllegalStateException("backend cuda is unavailable: " + probe().reason());
  }
}
