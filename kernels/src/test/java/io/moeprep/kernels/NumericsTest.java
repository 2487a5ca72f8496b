package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.contract.Numerics;
import io.moeprep.kernels.testing.NaiveOracle;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * round_D and the widening conversions against the oracle's search-based rounding, at every
 * representable value of BF16 and F16, at every midpoint between neighbours (the ties), one float
 * ulp either side of each midpoint, and on random floats.
 */
class NumericsTest {

  @Test
  void f16RoundingAtEveryValueAndMidpoint() {
    for (int h = 0; h < 0x7C00; h++) {
      float v = Numerics.f16ToFloat((short) h);
      assertEquals(NaiveOracle.widen(DType.F16, h), v, "widen " + h);
      float next = h + 1 < 0x7C00 ? Numerics.f16ToFloat((short) (h + 1)) : 65536f;
      float mid = (float) (((double) v + next) / 2);
      for (float f :
          new float[] {v, mid, Math.nextUp(mid), Math.nextDown(mid), -v, -mid, -Math.nextUp(mid)}) {
        assertEquals(
            NaiveOracle.narrow(DType.F16, f),
            Numerics.floatToF16(f) & 0xFFFF,
            "f16 of " + f + " (" + Integer.toHexString(Float.floatToRawIntBits(f)) + ")");
      }
    }
  }

  @Test
  void bf16RoundingAtEveryValueAndMidpoint() {
    for (int b = 0; b < 0x7F80; b++) {
      float v = Numerics.bf16ToFloat((short) b);
      float next = b + 1 < 0x7F80 ? Numerics.bf16ToFloat((short) (b + 1)) : Float.POSITIVE_INFINITY;
      float mid =
          Float.isInfinite(next)
              ? Float.intBitsToFloat(0x7F7F8000)
              : (float) (((double) v + next) / 2);
      for (float f : new float[] {v, mid, Math.nextUp(mid), Math.nextDown(mid), -mid}) {
        assertEquals(
            NaiveOracle.narrow(DType.BF16, f),
            Numerics.floatToBf16(f) & 0xFFFF,
            "bf16 of " + Integer.toHexString(Float.floatToRawIntBits(f)));
      }
    }
  }

  @Test
  void randomFloatsAndSpecials() {
    SplittableRandom rnd = Seeds.fresh("NumericsTest.randomFloats");
    for (int i = 0; i < 2_000_000; i++) {
      float f = Float.intBitsToFloat(rnd.nextInt());
      for (DType d : new DType[] {DType.F32, DType.BF16, DType.F16}) {
        int got =
            switch (d) {
              case F32 -> Numerics.f32Bits(f);
              case BF16 -> Numerics.floatToBf16(f) & 0xFFFF;
              default -> Numerics.floatToF16(f) & 0xFFFF;
            };
        assertEquals(
            NaiveOracle.narrow(d, f),
            got,
            d + " of " + Integer.toHexString(Float.floatToRawIntBits(f)));
      }
    }
    assertEquals(0x7E00, Numerics.floatToF16(Float.intBitsToFloat(0xFF800001)));
    assertEquals(0x7FC0, Numerics.floatToBf16(Float.intBitsToFloat(0x7F800001)));
    assertEquals(0x7C00, Numerics.floatToF16(65520f));
    assertEquals(0x7BFF, Numerics.floatToF16(65519.996f));
    assertEquals(0x0001, Numerics.floatToF16(0x1p-24f));
    assertEquals(0x0000, Numerics.floatToF16(0x1p-25f));
    assertEquals(0x8000, Numerics.floatToF16(-0f) & 0xFFFF);
  }
}
