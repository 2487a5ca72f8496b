package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;
import jcuda.driver.JCudaDriver;

/**
 * Device memory from {@code cuMemAlloc} on one {@link CudaDevice}.
 *
 * <p>A buffer has exactly one owner, which closes it (try-with-resources); {@link #close()} is
 * idempotent. Every allocation is counted in {@link #bytesInUse()} and {@link #liveBuffers()}, so
 * that tests can assert that nothing leaked. A {@link Cleaner} frees a buffer that became
 * unreachable without being closed and logs it as a leak: a backstop, not a way to manage memory. A
 * buffer of 0 bytes holds no memory and has address 0.
 */
public final class DeviceBuffer implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(DeviceBuffer.class.getName());
  private static final Cleaner CLEANER = Cleaner.create();
  private static final AtomicLong BYTES_IN_USE = new AtomicLong();
  private static final AtomicLong LIVE = new AtomicLong();
  private static final AtomicLong IDS = new AtomicLong();

  private final long id;
  private final long size;
  private final CudaDevice device;
  private final Release release;
  private final Cleaner.Cleanable cleanable;

  private DeviceBuffer(CudaDevice device, long size) {
    if (size < 0) {
      throw new IllegalArgumentException("buffer size " + size + " is invalid: must be >= 0");
    }
    this.id = IDS.incrementAndGet();
    this.size = size;
    this.device = device;
    long address = 0;
    if (size > 0) {
      device.makeCurrent();
      Driver.AllocatedPointer p = new Driver.AllocatedPointer();
      int rc = JCudaDriver.cuMemAlloc(p, size);
      check(rc, "cuMemAlloc(" + size + " bytes) on device " + device.ordinal());
      address = p.address();
    }
    BYTES_IN_USE.addAndGet(size);
    LIVE.incrementAndGet();
    this.release = new Release(id, device, address, size);
    this.cleanable = CLEANER.register(this, release);
  }

  /** Allocates {@code bytes} of uninitialised device memory on {@code device}. */
  public static DeviceBuffer allocate(CudaDevice device, long bytes) {
    return new DeviceBuffer(device, bytes);
  }

  /** Bytes currently allocated by all open device buffers of this process. */
  public static long bytesInUse() {
    return BYTES_IN_USE.get();
  }

  /** Number of device buffers allocated and not yet closed. */
  public static long liveBuffers() {
    return LIVE.get();
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
    if (release.closed.get()) {
      throw new IllegalStateException(this + " is closed");
    }
    return release.address;
  }

  /** True once closed. */
  public boolean isClosed() {
    return release.closed.get();
  }

  /** Frees the memory; later calls do nothing. */
  @Override
  public void close() {
    release.explicit = true;
    cleanable.clean();
  }

  @Override
  public String toString() {
    return "DeviceBuffer#" + id + "[" + size + " bytes on device " + device.ordinal() + "]";
  }

  private static final class Release implements Runnable {
    final long id;
    final CudaDevice device;
    final long address;
    final long size;
    final AtomicBoolean closed = new AtomicBoolean();
    volatile boolean explicit;

    Release(long id, CudaDevice device, long address, long size) {
      this.id = id;
      this.device = device;
      this.address = address;
      this.size = size;
    }

    @Override
    public void run() {
      if (!closed.compareAndSet(false, true)) {
        return;
      }
      if (!explicit) {
        LOG.warning("leak: DeviceBuffer#" + id + " of " + size + " bytes was never closed");
      }
      try {
        if (address != 0) {
          device.makeCurrent();
          check(
              JCudaDriver.cuMemFree(Driver.device(address)), "cuMemFree(DeviceBuffer#" + id + ")");
        }
      } finally {
        BYTES_IN_USE.addAndGet(-size);
        LIVE.decrementAndGet();
      }
    }
  }
}
