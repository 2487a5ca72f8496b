package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.LeakCheck;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Ownership, bounds, accounting and block recycling of host buffers. */
@ExtendWith(LeakCheck.class)
class HostBufferTest {

  @Test
  void closeIsIdempotentAndAccountingReturnsToItsStart() {
    long live = HostBuffer.liveBuffers();
    long bytes = HostBuffer.bytesInUse();
    HostBuffer b = HostBuffer.allocate(1000);
    assertEquals(live + 1, HostBuffer.liveBuffers());
    assertEquals(bytes + 1000, HostBuffer.bytesInUse());
    b.close();
    b.close();
    assertEquals(live, HostBuffer.liveBuffers());
    assertEquals(bytes, HostBuffer.bytesInUse());
    assertThrows(IllegalStateException.class, () -> b.getInt(0));
    assertTrue(b.toString().startsWith("HostBuffer#"));
  }

  @Test
  void accessOutsideTheBufferIsRefused() {
    try (HostBuffer b = HostBuffer.allocateZeroed(16)) {
      assertThrows(IndexOutOfBoundsException.class, () -> b.getLong(9));
      assertThrows(IndexOutOfBoundsException.class, () -> b.putInt(-1, 0));
      b.putLong(8, -1L);
      assertEquals(-1, b.getInt(12));
    }
  }

  @Test
  void bulkCopiesToAndFromArraysCheckBothRanges() {
    byte[] src = new byte[100];
    for (int i = 0; i < src.length; i++) {
      src[i] = (byte) (i * 7 + 1);
    }
    try (HostBuffer b = HostBuffer.allocateZeroed(64)) {
      b.copyFrom(3, src, 10, 50);
      assertEquals(0, b.getByte(2));
      assertEquals(src[10], b.getByte(3));
      assertEquals(src[59], b.getByte(52));
      assertEquals(0, b.getByte(53));
      byte[] dst = new byte[80];
      b.copyTo(3, dst, 20, 50);
      assertArrayEquals(
          java.util.Arrays.copyOfRange(src, 10, 60), java.util.Arrays.copyOfRange(dst, 20, 70));
      assertEquals(0, dst[19]);
      assertEquals(0, dst[70]);
      b.copyFrom(64, src, 100, 0); // empty copies at the ends are allowed
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(20, src, 60, 41));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(20, src, 0, 45));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(0, dst, 79, 2));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(-1, dst, 0, 2));
    }
  }

  @Test
  void largeBlocksAreRecycledAndZeroedOnRequest() {
    long size = 3L << 20;
    long addr;
    try (HostBuffer a = HostBuffer.allocate(size)) {
      a.fill(0, size, (byte) 7);
      addr = a.address();
    }
    assertTrue(HostBuffer.cachedBytes() >= size);
    try (HostBuffer again = HostBuffer.allocateZeroed(size)) {
      assertEquals(addr, again.address(), "the closed block is reused");
      assertEquals(0, again.getByte(size - 1));
    }
    HostBuffer.trimCache();
    assertEquals(0, HostBuffer.cachedBytes());
  }

  @Test
  void theCacheKeepsAtMostItsLimitAndNothingWhenOff() {
    long size = 1L << 20;
    try {
      HostBuffer.trimCache();
      HostBuffer.setCacheLimit(2 * size);
      HostBuffer a = HostBuffer.allocate(size);
      HostBuffer b = HostBuffer.allocate(size);
      HostBuffer c = HostBuffer.allocate(size);
      a.close();
      b.close();
      c.close();
      assertEquals(2 * size, HostBuffer.cachedBytes(), "the third block is freed, not cached");
      HostBuffer.setCacheLimit(size);
      assertTrue(HostBuffer.cachedBytes() <= size, "a lower limit frees the excess");
      HostBuffer.setCacheLimit(0);
      assertEquals(0, HostBuffer.cachedBytes());
      HostBuffer.allocate(size).close();
      assertEquals(0, HostBuffer.cachedBytes(), "limit 0: closed blocks are freed at once");
      assertThrows(IllegalArgumentException.class, () -> HostBuffer.setCacheLimit(-1));
    } finally {
      HostBuffer.setCacheLimit(HostBuffer.DEFAULT_CACHE_LIMIT);
    }
  }

  @Test
  void bytesCopyToAndFromJavaArraysWithinBounds() {
    byte[] src = {1, 2, 3, 4, 5, 6, 7};
    try (HostBuffer b = HostBuffer.allocateZeroed(8)) {
      b.copyFrom(3, src, 2, 5);
      assertEquals(3, b.getByte(3));
      assertEquals(7, b.getByte(7));
      assertEquals(0, b.getByte(2));
      byte[] dst = new byte[6];
      b.copyTo(2, dst, 1, 4);
      assertArrayEquals(new byte[] {0, 0, 3, 4, 5, 0}, dst);
      b.copyTo(8, dst, 6, 0); // empty ranges at the ends are fine
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(4, src, 0, 5));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(0, src, 3, 5));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(0, dst, 3, 4));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(-1, dst, 0, 1));
    }
  }
}
