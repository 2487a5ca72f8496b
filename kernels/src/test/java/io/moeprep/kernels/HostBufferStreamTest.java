package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.io.ByteArrayOutputStream;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Copies between host buffers and Java arrays, and writes of host buffers to output streams. */
@ExtendWith(LeakCheck.class)
class HostBufferStreamTest {

  @Test
  void arraysCopyInAndOutAtOffsets() {
    SplittableRandom rnd = Seeds.fresh("HostBufferStreamTest.arrays");
    byte[] src = new byte[1000];
    rnd.nextBytes(src);
    try (HostBuffer b = HostBuffer.allocateZeroed(1200)) {
      b.copyFrom(100, src, 10, 990);
      assertEquals(0, b.getByte(99));
      assertEquals(src[10], b.getByte(100));
      assertEquals(src[999], b.getByte(1089));
      assertEquals(0, b.getByte(1090));
      byte[] back = new byte[995];
      b.copyTo(100, back, 5, 990);
      assertArrayEquals(Arrays.copyOfRange(src, 10, 1000), Arrays.copyOfRange(back, 5, 995));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(300, src, 0, 1000));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyFrom(0, src, 999, 2));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(0, back, 990, 6));
      assertThrows(IndexOutOfBoundsException.class, () -> b.copyTo(-1, back, 0, 1));
    }
  }

  @Test
  void writeToAStreamCopiesEveryByteInSeveralSteps() throws Exception {
    SplittableRandom rnd = Seeds.fresh("HostBufferStreamTest.stream");
    long size = (3L << 20) + 12345; // more than three staging steps
    try (HostBuffer b = HostBuffer.allocate(size)) {
      RandomBatch.fillRandom(rnd, b);
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      out.write(42);
      b.writeTo(out, 7, size - 9);
      b.writeTo(out, 0, 0);
      byte[] got = out.toByteArray();
      assertEquals(1 + size - 9, got.length);
      assertEquals(42, got[0]);
      byte[] want = new byte[(int) (size - 9)];
      b.copyTo(7, want, 0, want.length);
      assertArrayEquals(want, Arrays.copyOfRange(got, 1, got.length));
      assertThrows(IndexOutOfBoundsException.class, () -> b.writeTo(out, 8, size - 7));
    }
    HostBuffer closed = HostBuffer.allocate(8);
    closed.close();
    assertThrows(
        IllegalStateException.class, () -> closed.writeTo(new ByteArrayOutputStream(), 0, 8));
  }
}
