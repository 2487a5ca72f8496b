package io.moeprep.kernels.cuda;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/** Checks of driver results, and JCuda pointers made from raw 64-bit addresses. */
final class Driver {
  private Driver() {}

  /**
   * Throws a {@link MoePrepCudaException} naming {@code what} unless {@code result} is {@code
   * CUDA_SUCCESS}.
   */
  static void check(int result, String what) {
    if (result == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
      throw new DeviceOutOfMemoryException(what + " failed: " + errorName(result));
    }
    if (result != CUresult.CUDA_SUCCESS) {
      throw new MoePrepCudaException(what + " failed: " + errorName(result), result);
    }
  }

  /** The driver's name of an error code, with the code. */
  static String errorName(int result) {
    String[] name = new String[1];
    String text;
    try {
      text =
          JCudaDriver.cuGetErrorName(result, name) == CUresult.CUDA_SUCCESS && name[0] != null
              ? name[0]
              : CUresult.stringFor(result);
    } catch (RuntimeException e) {
      text = CUresult.stringFor(result);
    }
    return text + " (" + result + ")";
  }

  /** A device pointer at a raw device address (0 gives a null pointer). */
  static CUdeviceptr device(long address) {
    return new CUdeviceptr().withByteOffset(address);
  }

  /** A host pointer at a raw native address, such as {@code HostBuffer.address()}. */
  static Pointer host(long address) {
    return new HostAddress(address);
  }

  /** A device pointer that the driver fills (cuMemAlloc), and that gives its address back. */
  static final class AllocatedPointer extends CUdeviceptr {
    long address() {
      return getNativePointer() + getByteOffset();
    }
  }

  /** A host pointer that the driver fills (cuMemHostAlloc), and that gives its address back. */
  static final class AllocatedHostPointer extends Pointer {
    long address() {
      return getNativePointer() + getByteOffset();
    }
  }

  /** A JCuda pointer to native memory given by its address. */
  private static final class HostAddress extends Pointer {
    HostAddress(long address) {
      super(address);
    }
  }
}
