package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;
import jcuda.driver.JCudaDriver;

/**
 * Page-locked host memory from {@code cuMemHostAlloc}, for staging small transfers that must not
 * wait for the driver's own pageable staging. Same ownership rules and accounting as {@link
 * DeviceBuffer}: one owner, idempotent {@link #close()}, {@link #bytesInUse()} for leak tests, a
 * {@link Cleaner} backstop that logs leaks.
 */
public final class PinnedBuffer implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(PinnedBuffer.class.getName());
  private static final Cleaner CLEANER = Cleaner.create();
  private static final AtomicLong BYTES_IN_USE = new AtomicLong();
  private static final AtomicLong IDS = new AtomicLong();

  private final long id;
  private final long size;
  private final Release release;
  private final Cleaner.Cleanable cleanable;

  private PinnedBuffer(CudaDevice device, long size) {
    this.id = IDS.incrementAndGet();
    this.size = size;
    long address = 0;
    if (size > 0) {
      device.makeCurrent();
      Driver.AllocatedHostPointer p = new Driver.AllocatedHostPointer();
      check(JCudaDriver.cuMemHostAlloc(p, size, 0), "cuMemHostAlloc(" + size + " bytes)");
      address = p.address();
    }
    BYTES_IN_USE.addAndGet(size);
    this.release = new Release(id, device, address, size);
    this.cleanable = CLEANER.register(this, release);
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
    return BYTES_IN_USE.get();
  }

  /** Size in bytes. */
  public long size() {
    return size;
  }

  /** Native address of byte 0; valid until {@link #close()}. */
  public long address() {
    if (release.closed.get()) {
      throw new IllegalStateException(this + " is closed");
    }
    return release.address;
  }

  /** Frees the memory; later calls do nothing. */
  @Override
  public void close() {
    release.explicit = true;
    cleanable.clean();
  }

  @Override
  public String toString() {
    return "PinnedBuffer#" + id + "[" + size + " bytes]";
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
        LOG.warning("leak: PinnedBuffer#" + id + " of " + size + " bytes was never closed");
      }
      try {
        if (address != 0) {
          device.makeCurrent();
          check(JCudaDriver.cuMemFreeHost(Driver.host(address)), "cuMemFreeHost(" + this + ")");
        }
      } finally {
        BYTES_IN_USE.addAndGet(-size);
      }
    }
  }
}
