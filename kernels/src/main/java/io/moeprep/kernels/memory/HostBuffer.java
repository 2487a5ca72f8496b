package io.moeprep.kernels.memory;

import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.atomic.AtomicLong;
import sun.misc.Unsafe;

/**
 * Off-heap host memory addressed with 64-bit byte offsets, so that one buffer can exceed 2 GiB.
 *
 * <p>A buffer has exactly one owner, which closes it (try-with-resources); {@link #close()} is
 * idempotent. Every allocation is counted in {@link #bytesInUse()} and {@link #liveBuffers()}, so
 * that tests can assert that nothing leaked. A Cleaner frees a buffer that became unreachable
 * without being closed, and logs it as a leak: it is a backstop, not a way to manage memory.
 *
 * <p>Large blocks (1 MiB and up) are recycled: a closed buffer's memory goes to a size-class cache
 * (at most {@link #cacheLimit()} bytes, {@value #DEFAULT_CACHE_LIMIT} unless a host such as the
 * Spark executor plugin sets it from its memory settings with {@link #setCacheLimit}) from which
 * later allocations of the same class are served, so that batch after batch writes into memory
 * whose pages are already mapped, instead of paying the kernel's page faults for every fresh block.
 * {@link #trimCache()} returns the cache to the system. Memory of another allocator (page-locked
 * memory of a GPU driver) can be given the same accessors with {@link #adopt}.
 *
 * <p>Accessors take byte offsets and check bounds: single values, and bulk copies to and from Java
 * arrays ({@link #copyFrom}, {@link #copyTo}), between buffers and to an output stream ({@link
 * #writeTo}). Multi-byte values are little-endian (the platform order, checked at class load). This
 * package is the only user of {@link Unsafe} in the kernels.
 */
public final class HostBuffer implements AutoCloseable {
  /** The cache limit of a process that sets none: 2 GiB. */
  public static final long DEFAULT_CACHE_LIMIT = 2L << 30;

  private static final Unsafe UNSAFE = loadUnsafe();
  private static final NativeAllocation.Ledger LEDGER = new NativeAllocation.Ledger("HostBuffer");
  private static final long STAGE_BYTES = 16L << 20;
  private static final long BUFFER_ADDRESS = bufferAddressOffset();
  private static final long POOL_MIN = 1L << 20;
  private static volatile long cacheLimit = HostBuffer.DEFAULT_CACHE_LIMIT;
  private static final ConcurrentHashMap<Long, ConcurrentLinkedDeque<Long>> CACHE =
      new ConcurrentHashMap<>();
  private static final AtomicLong CACHED_BYTES = new AtomicLong();

  static {
    if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
      throw new ExceptionInInitializerError("MoePrep needs a little-endian platform");
    }
  }

  private final long address;
  private final long size;
  private final NativeAllocation allocation;

  private HostBuffer(long size, boolean zero) {
    if (size < 0) {
      throw new IllegalArgumentException("buffer size " + size + " is invalid: must be >= 0");
    }
    this.size = size;
    long block = blockSize(size);
    this.address = size == 0 ? 0 : obtain(block);
    if (zero && size > 0) {
      UNSAFE.setMemory(address, size, (byte) 0);
    }
    this.allocation = new NativeAllocation(this, LEDGER, address, size, a -> recycle(a, block));
  }

  private HostBuffer(
      long address, long size, NativeAllocation.Ledger ledger, NativeAllocation.Free free) {
    this.address = address;
    this.size = size;
    this.allocation = new NativeAllocation(this, ledger, address, size, free);
  }

  /** Allocates {@code bytes} of uninitialised memory. */
  public static HostBuffer allocate(long bytes) {
    return new HostBuffer(bytes, false);
  }

  /** Allocates {@code bytes} of memory set to zero. */
  public static HostBuffer allocateZeroed(long bytes) {
    return new HostBuffer(bytes, true);
  }

  /**
   * Takes ownership of {@code size} bytes of host memory at {@code address} that another allocator
   * made (page-locked memory from a GPU driver): the buffer has this class's accessors, is counted
   * in {@code ledger} instead of {@link #bytesInUse()}, and {@code free} gives the memory back on
   * close (never to this class's block cache). {@code free} must not refer to the buffer.
   */
  public static HostBuffer adopt(
      long address, long size, NativeAllocation.Ledger ledger, NativeAllocation.Free free) {
    if (size < 0 || (size > 0 && address == 0)) {
      throw new IllegalArgumentException(
          "adopted memory of " + size + " bytes at " + address + " is invalid");
    }
    return new HostBuffer(address, size, ledger, free);
  }

  /** Bytes currently allocated by all open host buffers of this process. */
  public static long bytesInUse() {
    return LEDGER.bytesInUse();
  }

  /** Bytes of closed buffers kept for reuse (not counted in {@link #bytesInUse()}). */
  public static long cachedBytes() {
    return CACHED_BYTES.get();
  }

  /** The most bytes that the block cache keeps ({@link #cachedBytes()} stays at or below it). */
  public static long cacheLimit() {
    return cacheLimit;
  }

  /**
   * Sets the most bytes of closed buffers kept for reuse, and frees cached blocks beyond it; {@code
   * 0} turns the cache off (every closed buffer is freed at once). The process's owner of its
   * memory settings calls it (the Spark executor plugin, from the executor's settings).
   *
   * @throws IllegalArgumentException when {@code bytes < 0}
   */
  public static void setCacheLimit(long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("cache limit " + bytes + " is invalid: must be >= 0");
    }
    cacheLimit = bytes;
    if (CACHED_BYTES.get() > bytes) {
      trimCache();
    }
  }

  /** Frees every cached block. */
  public static void trimCache() {
    CACHE.forEach(
        (block, q) -> {
          for (Long a = q.poll(); a != null; a = q.poll()) {
            UNSAFE.freeMemory(a);
            CACHED_BYTES.addAndGet(-block);
          }
        });
  }

  /** Size class of a request: 1 MiB and up rounds up to an eighth of its power of two. */
  private static long blockSize(long size) {
    if (size < POOL_MIN) {
      return size;
    }
    long step = Long.highestOneBit(size) >>> 3;
    return (size + step - 1) / step * step;
  }

  private static long obtain(long block) {
    if (block >= POOL_MIN) {
      ConcurrentLinkedDeque<Long> q = CACHE.get(block);
      Long a = q == null ? null : q.poll();
      if (a != null) {
        CACHED_BYTES.addAndGet(-block);
        return a;
      }
    }
    try {
      return UNSAFE.allocateMemory(block);
    } catch (OutOfMemoryError e) {
      trimCache();
      return UNSAFE.allocateMemory(block);
    }
  }

  private static void recycle(long address, long block) {
    if (block >= POOL_MIN && CACHED_BYTES.addAndGet(block) <= cacheLimit) {
      CACHE.computeIfAbsent(block, b -> new ConcurrentLinkedDeque<>()).push(address);
      return;
    }
    if (block >= POOL_MIN) {
      CACHED_BYTES.addAndGet(-block);
    }
    UNSAFE.freeMemory(address);
  }

  /** Number of host buffers allocated and not yet closed. */
  public static long liveBuffers() {
    return LEDGER.liveCount();
  }

  /**
   * The raw {@link Unsafe}, for code outside the kernels module that still addresses buffers
   * through {@link #address()} (the kernels themselves use the accessors of this class).
   */
  public static Unsafe unsafe() {
    return UNSAFE;
  }

  /** Size in bytes. */
  public long size() {
    return size;
  }

  /** Native address of byte 0; valid until {@link #close()}. */
  public long address() {
    checkOpen();
    return address;
  }

  /** True once closed. */
  public boolean isClosed() {
    return allocation.isClosed();
  }

  /** The byte at byte {@code offset}. */
  public byte getByte(long offset) {
    return UNSAFE.getByte(at(offset, 1));
  }

  /** Writes the byte {@code v} at byte {@code offset}. */
  public void putByte(long offset, byte v) {
    UNSAFE.putByte(at(offset, 1), v);
  }

  /** The int16 at byte {@code offset}. */
  public short getShort(long offset) {
    return UNSAFE.getShort(at(offset, 2));
  }

  /** Writes the int16 {@code v} at byte {@code offset}. */
  public void putShort(long offset, short v) {
    UNSAFE.putShort(at(offset, 2), v);
  }

  /** The int32 at byte {@code offset}. */
  public int getInt(long offset) {
    return UNSAFE.getInt(at(offset, 4));
  }

  /** Writes the int32 {@code v} at byte {@code offset}. */
  public void putInt(long offset, int v) {
    UNSAFE.putInt(at(offset, 4), v);
  }

  /** The int64 at byte {@code offset}. */
  public long getLong(long offset) {
    return UNSAFE.getLong(at(offset, 8));
  }

  /** Writes the int64 {@code v} at byte {@code offset}. */
  public void putLong(long offset, long v) {
    UNSAFE.putLong(at(offset, 8), v);
  }

  /**
   * Reads the int64 at {@code offset} with volatile semantics: it sees the latest value another
   * thread, or a device writing into mapped page-locked memory, stored there.
   */
  public long getLongVolatile(long offset) {
    return UNSAFE.getLongVolatile(null, at(offset, 8));
  }

  /** Writes the int64 at {@code offset} with volatile semantics. */
  public void putLongVolatile(long offset, long v) {
    UNSAFE.putLongVolatile(null, at(offset, 8), v);
  }

  /** The float32 at byte {@code offset}. */
  public float getFloat(long offset) {
    return UNSAFE.getFloat(at(offset, 4));
  }

  /** Writes the float32 {@code v} at byte {@code offset}. */
  public void putFloat(long offset, float v) {
    UNSAFE.putFloat(at(offset, 4), v);
  }

  /** Sets {@code length} bytes from {@code offset} to {@code value}. */
  public void fill(long offset, long length, byte value) {
    if (length > 0) {
      UNSAFE.setMemory(at(offset, length), length, value);
    }
  }

  /** Copies {@code count} int16 values from {@code offset} into {@code dst[0, count)}. */
  public void getShorts(long offset, short[] dst, int count) {
    Objects.checkFromIndexSize(0, count, dst.length);
    UNSAFE.copyMemory(
        null, at(offset, 2L * count), dst, Unsafe.ARRAY_SHORT_BASE_OFFSET, 2L * count);
  }

  /** Copies {@code src[0, count)} to {@code count} int16 values from {@code offset}. */
  public void putShorts(long offset, short[] src, int count) {
    Objects.checkFromIndexSize(0, count, src.length);
    UNSAFE.copyMemory(
        src, Unsafe.ARRAY_SHORT_BASE_OFFSET, null, at(offset, 2L * count), 2L * count);
  }

  /** Copies {@code src[0, count)} to {@code count} int32 values from {@code offset}. */
  public void putInts(long offset, int[] src, int count) {
    Objects.checkFromIndexSize(0, count, src.length);
    UNSAFE.copyMemory(src, Unsafe.ARRAY_INT_BASE_OFFSET, null, at(offset, 4L * count), 4L * count);
  }

  /** Copies {@code count} float32 values from {@code offset} into {@code dst[0, count)}. */
  public void getFloats(long offset, float[] dst, int count) {
    Objects.checkFromIndexSize(0, count, dst.length);
    UNSAFE.copyMemory(
        null, at(offset, 4L * count), dst, Unsafe.ARRAY_FLOAT_BASE_OFFSET, 4L * count);
  }

  /**
   * Copies {@code length} bytes from {@code src} at {@code srcOffset} to this at {@code offset}.
   */
  public void copyFrom(long offset, HostBuffer src, long srcOffset, long length) {
    if (length > 0) {
      UNSAFE.copyMemory(src.at(srcOffset, length), at(offset, length), length);
    }
  }

  /**
   * Copies {@code length} bytes of the array {@code src} from {@code srcOffset} to this buffer at
   * {@code offset}, in one bulk copy; both ranges are bounds-checked.
   */
  public void copyFrom(long offset, byte[] src, long srcOffset, long length) {
    Objects.checkFromIndexSize(srcOffset, length, src.length);
    if (length > 0) {
      UNSAFE.copyMemory(
          src, Unsafe.ARRAY_BYTE_BASE_OFFSET + srcOffset, null, at(offset, length), length);
    }
  }

  /**
   * Copies {@code length} bytes of this buffer from {@code offset} into the array {@code dst} at
   * {@code dstOffset}, in one bulk copy; both ranges are bounds-checked.
   */
  public void copyTo(long offset, byte[] dst, long dstOffset, long length) {
    Objects.checkFromIndexSize(dstOffset, length, dst.length);
    if (length > 0) {
      UNSAFE.copyMemory(
          null, at(offset, length), dst, Unsafe.ARRAY_BYTE_BASE_OFFSET + dstOffset, length);
    }
  }

  /**
   * A new array holding {@code length} bytes of this buffer from {@code offset} (under 2 GiB: a
   * Java array's limit, checked).
   */
  public byte[] toBytes(long offset, long length) {
    byte[] out = new byte[Math.toIntExact(length)];
    copyTo(offset, out, 0, out.length);
    return out;
  }

  /**
   * Writes {@code length} bytes from {@code offset} to {@code out} (any length, 64-bit), through a
   * heap staging array of at most 1 MiB; {@code out} is neither flushed nor closed.
   *
   * @throws IndexOutOfBoundsException when the range does not fit
   */
  public void writeTo(OutputStream out, long offset, long length) throws IOException {
    long src = length == 0 ? 0 : at(offset, length);
    byte[] stage = new byte[(int) Math.min(length, 1L << 20)];
    for (long done = 0; done < length; ) {
      int n = (int) Math.min(length - done, stage.length);
      checkOpen();
      UNSAFE.copyMemory(null, src + done, stage, Unsafe.ARRAY_BYTE_BASE_OFFSET, n);
      out.write(stage, 0, n);
      done += n;
    }
  }

  /** True when {@code length} bytes from the two offsets are equal. */
  public boolean contentEquals(long offset, HostBuffer other, long otherOffset, long length) {
    long a = at(offset, length);
    long b = other.at(otherOffset, length);
    long i = 0;
    for (; i + 8 <= length; i += 8) {
      if (UNSAFE.getLong(a + i) != UNSAFE.getLong(b + i)) {
        return false;
      }
    }
    for (; i < length; i++) {
      if (UNSAFE.getByte(a + i) != UNSAFE.getByte(b + i)) {
        return false;
      }
    }
    return true;
  }

  /**
   * Reads {@code length} bytes of {@code channel} from {@code position} into this buffer at {@code
   * offset}, through a bounded staging buffer (any length, 64-bit).
   *
   * @throws EOFException when the channel ends first
   */
  public void readFrom(FileChannel channel, long position, long offset, long length)
      throws IOException {
    long dst = length == 0 ? 0 : at(offset, length);
    ByteBuffer stage = ByteBuffer.allocateDirect((int) Math.min(length, STAGE_BYTES) + 1);
    long stageAddr = UNSAFE.getLong(stage, BUFFER_ADDRESS);
    long done = 0;
    while (done < length) {
      stage.clear().limit((int) Math.min(length - done, STAGE_BYTES));
      int n = channel.read(stage, position + done);
      if (n < 0) {
        throw new EOFException(
            "file ends after " + (position + done) + " bytes: " + length + " data bytes expected");
      }
      UNSAFE.copyMemory(stageAddr, dst + done, n);
      done += n;
    }
  }

  /** Writes {@code length} bytes from {@code offset} to the end of {@code channel}. */
  public void writeTo(FileChannel channel, long offset, long length) throws IOException {
    long src = length == 0 ? 0 : at(offset, length);
    ByteBuffer stage = ByteBuffer.allocateDirect((int) Math.min(length, STAGE_BYTES) + 1);
    long stageAddr = UNSAFE.getLong(stage, BUFFER_ADDRESS);
    long done = 0;
    while (done < length) {
      int n = (int) Math.min(length - done, STAGE_BYTES);
      UNSAFE.copyMemory(src + done, stageAddr, n);
      stage.clear().limit(n);
      while (stage.hasRemaining()) {
        channel.write(stage);
      }
      done += n;
    }
  }

  private long at(long offset, long length) {
    checkOpen();
    Objects.checkFromIndexSize(offset, length, size);
    return address + offset;
  }

  private void checkOpen() {
    allocation.address();
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

  private static long bufferAddressOffset() {
    try {
      return UNSAFE.objectFieldOffset(Buffer.class.getDeclaredField("address"));
    } catch (NoSuchFieldException e) {
      throw new ExceptionInInitializerError(e);
    }
  }

  private static Unsafe loadUnsafe() {
    try {
      Field f = Unsafe.class.getDeclaredField("theUnsafe");
      f.setAccessible(true);
      return (Unsafe) f.get(null);
    } catch (ReflectiveOperationException e) {
      throw new ExceptionInInitializerError(e);
    }
  }
}
