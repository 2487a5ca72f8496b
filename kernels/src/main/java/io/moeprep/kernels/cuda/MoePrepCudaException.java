package io.moeprep.kernels.cuda;

/**
 * The one exception type for device failures: a CUDA driver call or kernel launch that failed. The
 * message names the call (or the kernel and its grid) and the driver's error name and code.
 */
public final class MoePrepCudaException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final int errorCode;

  /** A failure with the driver's error code ({@code CUresult}). */
  public MoePrepCudaException(String message, int errorCode) {
    super(message);
    this.errorCode = errorCode;
  }

  /** A failure without a driver error code (for example a missing kernel resource). */
  public MoePrepCudaException(String message, Throwable cause) {
    super(message, cause);
    this.errorCode = -1;
  }

  /** The driver's {@code CUresult}, or {@code -1} when the failure did not come from the driver. */
  public int errorCode() {
    return errorCode;
  }
}
