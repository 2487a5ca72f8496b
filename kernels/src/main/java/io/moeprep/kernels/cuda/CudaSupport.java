package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.KernelBackend;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Whether the CUDA backend can run here, and the reason when it cannot. */
public final class CudaSupport {
  private static final Logger LOG = LoggerFactory.getLogger(CudaSupport.class);

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
   * Why a link error keeps the CUDA backend from running, short and in the user's words: {@code no
   * CUDA driver (libcuda.so not found)} when the driver library is missing, {@code JCuda is not on
   * the class path} when its classes are; otherwise the innermost cause that JCuda nests in its
   * message (its stack traces left out, a temporary path shortened to the library's name). The full
   * error goes to the debug log.
   */
  static String briefly(LinkageError e) {
    LOG.debug("moeprep: the CUDA driver library could not be loaded", e);
    String msg = String.valueOf(e.getMessage());
    if (msg.contains("libcuda.so")) {
      return "no CUDA driver (libcuda.so not found)";
    }
    if (e instanceof NoClassDefFoundError) {
      return "JCuda is not on the class path (" + msg + " is missing)";
    }
    String[] lines = msg.split("\\R");
    String cause = lines[0];
    for (int i = lines.length - 1; i > 0; i--) {
      int at = lines[i].indexOf("UnsatisfiedLinkError: ");
      if (at >= 0) {
        cause = lines[i].substring(at + "UnsatisfiedLinkError: ".length());
        break;
      }
    }
    // "/tmp/libJCudaDriver-12.6.0-linux-x86_64.so: reason": the library's name, not its temp path
    cause = cause.replaceFirst("^/\\S*/([^/\\s]+\\.so[^:\\s]*):", "$1:");
    return "the CUDA driver library could not be loaded: " + cause;
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
        return new Probe(false, briefly(e));
      } catch (MoePrepCudaException e) {
        return new Probe(false, e.getMessage());
      } catch (RuntimeException e) {
        LOG.debug("moeprep: probing CUDA failed", e);
        return new Probe(false, "probing CUDA failed: " + e.getMessage());
      }
    }
  }
}
