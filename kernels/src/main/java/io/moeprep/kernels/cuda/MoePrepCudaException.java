package io.moeprep.kernels.cuda;

/**
 * The one exception type for device failures: a CUDA driver call or kernel launch that failed. The
 * message names the call (or the kernel and its grid) and the driver's error name and code; a
 * caller that knows more (the Spark rank and batch) adds it with {@link #in(String)}.
 */
public class MoePrepCudaException extends RuntimeException {
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

  /** A failure with the driver's error code, found while doing something described by a caller. */
  protected MoePrepCudaException(String message, int errorCode, Throwable cause) {
    super(message, cause);
    this.errorCode = errorCode;
  }

  /** The driver's {@code CUresult}, or {@code -1} when the failure did not come from the driver. */
  public int errorCode() {
    return errorCode;
  }

  /**
   * The same failure (same type and code) with {@code where} (for example {@code "rank 3, batch
   * 17"}) in front of the message; this exception is the cause.
   */
  public MoePrepCudaException in(String where) {
    return new MoePrepCudaException(where + ": " + getMessage(), errorCode, this);
  }
}
