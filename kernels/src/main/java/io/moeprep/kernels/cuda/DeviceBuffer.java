package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import io.moeprep.kernels.memory.NativeAllocation;
import jcuda.driver.JCudaDriver;

/**
 * Device memory from {@code cuMemAlloc} on one {@link CudaDevice}.
 *
 * <p>A buffer has exactly one owner, which closes it (try-with-resources); {@link #close()} is
 * idempotent. Every allocation is counted in {@link #bytesInUse()} and {@link #liveBuffers()}, so
 * that tests can assert that nothing leaked. A Cleaner frees a buffer that became unreachable
 * without being closed and logs it as a leak (a {@link NativeAllocation}): a backstop, not a way to
 * manage memory. A buffer of 0 bytes holds no memory and has address 0.
 */
public final class DeviceBuffer implements AutoCloseable {
  private static final NativeAllocation.Ledger LEDGER = new NativeAllocation.Ledger("DeviceBuffer");

  private final long size;
  private final CudaDevice device;
  private final NativeAllocation allocation;

  private DeviceBuffer(CudaDevice device, long size) {
    if (size < 0) {
      throw new IllegalArgumentException("buffer size " + size + " is invalid: must be >= 0");
    }
    this.size = size;
    this.device = device;
    long address = 0;
    long held = size; // captured by the release action, which must not hold this buffer
    if (size > 0) {
      device.makeCurrent();
      device.reserve(size);
      Driver.AllocatedPointer p = new Driver.AllocatedPointer();
      try {
        check(
            JCudaDriver.cuMemAlloc(p, size),
            "cuMemAlloc(" + size + " bytes) on device " + device.ordinal());
      } catch (RuntimeException e) {
        device.release(size);
        throw e;
      }
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
              check(JCudaDriver.cuMemFree(Driver.device(a)), "cuMemFree(" + a + ")");
              device.release(held);
            });
  }

  /** Allocates {@code bytes} of uninitialised device memory on {@code device}. */
  public static DeviceBuffer allocate(CudaDevice device, long bytes) {
    return new DeviceBuffer(device, bytes);
  }

  /** Bytes currently allocated by all open device buffers of this process. */
  public static long bytesInUse() {
    return LEDGER.bytesInUse();
  }

  /** Number of device buffers allocated and not yet closed. */
  public static long liveBuffers() {
    return LEDGER.liveCount();
  }

  /** Size in bytes. */
  public long size() {
    return size;
  }

  /** The device that holds the memory. */
  public CudaDevice device() {
    return device;
  }

  /** Device address of byte 0 (0 for an empty buffer); valid until {@link #close()}. */
  public long address() {
    return allocation.address();
  }

  /** True once closed. */
  public boolean isClosed() {
    return allocation.isClosed();
  }

  /** Frees the memory; later calls do nothing. */
  @Override
  public void close() {
    allocation.close();
  }

  @Override
  public String toString() {
    return allocation.label() + "[" + size + " bytes on device " + device.ordinal() + "]";
  }
}
