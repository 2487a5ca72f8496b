package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * Asynchronous copies on one device, between raw device and host addresses, queued on {@code
 * stream} ({@code null}: the calling thread's per-thread default stream).
 */
public final class DeviceCopies {
  private final CudaDevice device;

  private DeviceCopies(CudaDevice device) {
    this.device = device;
  }

  /** The copies on {@code device}. */
  public static DeviceCopies on(CudaDevice device) {
    return new DeviceCopies(device);
  }

  /** Device-to-device copy of {@code bytes} (for baselines and callers). */
  public void copy(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyDtoDAsync(
              Driver.device(dst), Driver.device(src), bytes, orDefault(stream)),
          "cuMemcpyDtoDAsync(" + bytes + " bytes)");
    }
  }

  /** Copies {@code bytes} from host address {@code src} to device address {@code dst}. */
  public void copyToDevice(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyHtoDAsync(
              Driver.device(dst), Driver.host(src), bytes, orDefault(stream)),
          "cuMemcpyHtoDAsync(" + bytes + " bytes)");
    }
  }

  /** Copies {@code bytes} from device address {@code src} to host address {@code dst}. */
  public void copyToHost(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyDtoHAsync(
              Driver.host(dst), Driver.device(src), bytes, orDefault(stream)),
          "cuMemcpyDtoHAsync(" + bytes + " bytes)");
    }
  }

  /** {@code stream}, or the per-thread default stream for {@code null}. */
  static CUstream orDefault(CUstream s) {
    return s == null ? CudaDevice.PER_THREAD_STREAM : s;
  }
}
