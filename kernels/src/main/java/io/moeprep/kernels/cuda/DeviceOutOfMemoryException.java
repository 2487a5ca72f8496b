package io.moeprep.kernels.cuda;

import jcuda.driver.CUresult;

/**
 * A device allocation failed for lack of memory: the driver's {@code CUDA_ERROR_OUT_OF_MEMORY}, or
 * the memory limit of the {@link CudaDevice} ({@link CudaDevice#setMemoryLimit}). Nothing of the
 * failed operation stays allocated, so a caller may run the same work elsewhere (on the CPU, or in
 * smaller pieces).
 */
public final class DeviceOutOfMemoryException extends MoePrepCudaException {
  private static final long serialVersionUID = 1L;

  /** A failure described by {@code message}. */
  public DeviceOutOfMemoryException(String message) {
    super(message, CUresult.CUDA_ERROR_OUT_OF_MEMORY);
  }

  private DeviceOutOfMemoryException(String message, Throwable cause) {
    super(message, CUresult.CUDA_ERROR_OUT_OF_MEMORY, cause);
  }

  @Override
  public DeviceOutOfMemoryException in(String where) {
    return new DeviceOutOfMemoryException(where + ": " + getMessage(), this);
  }
}
