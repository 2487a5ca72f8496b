package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import io.moeprep.kernels.memory.NativeAllocation;
import jcuda.driver.JCudaDriver;

/**
 * Page-locked host memory from {@code cuMemHostAlloc}, for staging small transfers that must not
 * wait for the driver's own pageable staging. Same ownership rules and accounting as {@link
 * DeviceBuffer} (a {@link NativeAllocation}): one owner, idempotent {@link #close()}, {@link
 * #bytesInUse()} for leak tests, a Cleaner backstop that logs leaks.
 */
public final class PinnedBuffer implements AutoCloseable {
  private static final NativeAllocation.Ledger LEDGER = new NativeAllocation.Ledger("PinnedBuffer");

  private final long size;
  private final NativeAllocation allocation;

  private PinnedBuffer(CudaDevice device, long size) {
    this.size = size;
    long address = 0;
    if (size > 0) {
      device.makeCurrent();
      Driver.AllocatedHostPointer p = new Driver.AllocatedHostPointer();
      check(JCudaDriver.cuMemHostAlloc(p, size, 0), "cuMemHostAlloc(" + size + " bytes)");
      address = p.address();
    }
    this.allocation =
        new NativeAllocation(
            this,
            LEDGER,
            address,
            size,
            a -> {
              device.makeCurrent();
              check(JCudaDriver.cuMemFreeHost(Driver.host(a)), "cuMemFreeHost(" + a + ")");
            });
  }

  /** Allocates {@code bytes} of page-locked host memory (current context: {@code device}'s). */
  public static PinnedBuffer allocate(CudaDevice device, long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("buffer size " + bytes + " is invalid: must be >= 0");
    }
    return new PinnedBuffer(device, bytes);
  }

  /** Bytes currently allocated by all open pinned buffers of this process. */
  public static long bytesInUse() {
    return LEDGER.bytesInUse();
  }

  /** Size in bytes. */
  public long size() {
    return size;
  }

  /** Native address of byte 0; valid until {@link #close()}. */
  public long address() {
    return allocation.address();
  }

  /** Frees the memory; later calls do nothing. */
  @Override
  public void close() {
    allocation.close();
  }

  @Override
  public String toString() {
    return allocation.label() + "[" + size + " bytes]";
  }
}
