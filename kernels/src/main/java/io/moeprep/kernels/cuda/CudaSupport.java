package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.KernelBackend;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/** Whether the CUDA backend can run here, and the reason when it cannot. */
public final class CudaSupport {
  private CudaSupport() {}

  /** The outcome of probing for a driver, a device and the fatbin. */
  public record Probe(boolean available, String reason) {}

  /** Probes once per process. */
  public static Probe probe() {
    return Holder.PROBE;
  }

  /**
   * The CUDA backend on device 0 with the shipped tuning ({@link KernelTuning#DEFAULT}).
   *
   * @throws IllegalStateException with the probe's reason when it cannot run
   */
  public static KernelBackend backend() {
    requireAvailable();
    return Holder.BACKEND;
  }

  /**
   * The CUDA backend on GPU {@code device} with {@code tuning}: the device and the tuning are
   * passed down, never read from system properties.
   *
   * @param device the GPU ordinal, {@code >= 0}
   * @throws IllegalStateException with the probe's reason when CUDA cannot run, or when there is no
   *     GPU {@code device}
   */
  public static CudaBackend backend(int device, KernelTuning tuning) {
    requireAvailable();
    if (device < 0 || device >= Holder.count) {
      throw new IllegalStateException(
          "backend cuda is unavailable: device "
              + device
              + " requested but only "
              + Holder.count
              + " present");
    }
    return CudaBackend.on(device, tuning);
  }

  private static void requireAvailable() {
    Probe p = probe();
    if (!p.available()) {
      throw new IllegalStateException("backend cuda is unavailable: " + p.reason());
    }
  }

  /**
   * The first line of a link error and, when JCuda nests the attempts' stack traces in its message,
   * the innermost cause (such as {@code libcuda.so.1: cannot open shared object file}).
   */
  static String briefly(LinkageError e) {
    String msg = String.valueOf(e.getMessage());
    String[] lines = msg.split("\\R");
    String first = e.getClass().getSimpleName() + ": " + lines[0];
    for (int i = lines.length - 1; i > 0; i--) {
      int at = lines[i].indexOf("UnsatisfiedLinkError: ");
      if (at >= 0) {
        return first + " (" + lines[i].substring(at + "UnsatisfiedLinkError: ".length()) + ")";
      }
    }
    return first;
  }

  private static final class Holder {
    static CudaBackend BACKEND;
    static int count;
    static final Probe PROBE = run();

    private static Probe run() {
      if (!Fatbins.present()) {
        return new Probe(false, "this jar has no CUDA kernels (built without nvcc)");
      }
      try {
        int rc = JCudaDriver.cuInit(0);
        if (rc != CUresult.CUDA_SUCCESS) {
          return new Probe(false, "cuInit failed: " + Driver.errorName(rc));
        }
        int[] count = new int[1];
        rc = JCudaDriver.cuDeviceGetCount(count);
        if (rc != CUresult.CUDA_SUCCESS) {
          return new Probe(false, "cuDeviceGetCount failed: " + Driver.errorName(rc));
        }
        if (count[0] == 0) {
          return new Probe(false, "no CUDA device");
        }
        Holder.count = count[0];
        BACKEND = CudaBackend.on(0);
        return new Probe(true, "CUDA on " + BACKEND.device());
      } catch (LinkageError e) {
        return new Probe(false, "the CUDA driver library could not be loaded: " + briefly(e));
      } catch (MoePrepCudaException e) {
        return new Probe(false, e.getMessage());
      } catch (RuntimeException e) {
        return new Probe(false, "probing CUDA failed: " + e);
      }
    }
  }
}
