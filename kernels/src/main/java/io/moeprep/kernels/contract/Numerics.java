package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * The element conversions of the contract, bit for bit: widening BF16 and F16 to float32, and
 * {@code round_D}, round-to-nearest-even from float32 to D. Every NaN becomes the canonical quiet
 * NaN of D ({@code 0x7FC00000}, {@code 0x7FC0}, {@code 0x7E00}), because CPUs and GPUs disagree on
 * NaN payloads and the backends must give the same bytes. The CUDA kernels implement the same
 * integer algorithms.
 */
public final class Numerics {
  /** Canonical quiet NaN bits per dtype. */
  public static final int F32_NAN = 0x7FC00000;

  public static final short BF16_NAN = 0x7FC0;
  public static final short F16_NAN = 0x7E00;

  private static final float[] F16_TO_FLOAT = new float[1 << 16];

  static {
    for (int h = 0; h < F16_TO_FLOAT.length; h++) {
      F16_TO_FLOAT[h] = decodeF16((short) h);
    }
  }

  private Numerics() {}

  /** Widens BF16 bits to float32 (exact). */
  public static float bf16ToFloat(short bits) {
    return Float.intBitsToFloat((bits & 0xFFFF) << 16);
  }

  /** Widens F16 bits to float32 (exact). */
  public static float f16ToFloat(short bits) {
    return F16_TO_FLOAT[bits & 0xFFFF];
  }

  /** Rounds float32 to BF16 bits, nearest-even; NaN becomes {@link #BF16_NAN}. */
  public static short floatToBf16(float f) {
    int x = Float.floatToRawIntBits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) {
      return BF16_NAN;
    }
    int lsb = (x >>> 16) & 1;
    return (short) ((x + 0x7FFF + lsb) >>> 16);
  }

  /** Rounds float32 to F16 bits, nearest-even, with subnormals; NaN becomes {@link #F16_NAN}. */
  public static short floatToF16(float f) {
    int x = Float.floatToRawIntBits(f);
    int sign = (x >>> 16) & 0x8000;
    int abs = x & 0x7FFFFFFF;
    if (abs > 0x7F800000) {
      return F16_NAN;
    }
    if (abs >= 0x477FF000) { // 65520 and above round to infinity
      return (short) (sign | 0x7C00);
    }
    if (abs >= 0x38800000) { // normal in F16: rebias the exponent by 112, round 13 mantissa bits
      int m = abs - 0x38000000;
      m += 0xFFF + ((m >>> 13) & 1);
      return (short) (sign | (m >>> 13));
    }
    if (abs <= 0x33000000) { // at most half of the smallest subnormal: rounds to zero
      return (short) sign;
    }
    int e = abs >>> 23;
    int mant = (abs & 0x7FFFFF) | 0x800000;
    int shift = 126 - e;
    int q = mant >>> shift;
    int rem = mant & ((1 << shift) - 1);
    int half = 1 << (shift - 1);
    if (rem > half || (rem == half && (q & 1) == 1)) {
      q++;
    }
    return (short) (sign | q);
  }

  /** Canonicalises a float32 NaN; other values pass unchanged. */
  public static int f32Bits(float f) {
    return Float.isNaN(f) ? F32_NAN : Float.floatToRawIntBits(f);
  }

  private static float decodeF16(short bits) {
    int h = bits & 0xFFFF;
    int sign = (h & 0x8000) << 16;
    int exp = (h >>> 10) & 0x1F;
    int mant = h & 0x3FF;
    if (exp == 0) {
      float v = mant * 0x1p-24f;
      return sign != 0 ? -v : v;
    }
    if (exp == 31) {
      return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
    }
    return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
  }

  /**
   * Per-thread scratch for the row conversions: the raw elements of one row on the heap, where the
   * JIT can vectorise the conversion loops.
   */
  public static final class RowScratch {
    final short[] halves;
    final int[] words;

    /** Scratch for rows of up to {@code h} elements. */
    public RowScratch(int h) {
      halves = new short[h];
      words = new int[h];
    }
  }

  /**
   * Widens the {@code h} elements of dtype {@code d} at byte {@code offset} of {@code src} into
   * {@code dst}.
   *
   * @throws IllegalArgumentException for FP8, which is never converted
   */
  public static void decodeRow(
      DType d, HostBuffer src, long offset, float[] dst, int h, RowScratch s) {
    switch (d) {
      case F32 -> src.getFloats(offset, dst, h);
      case BF16 -> {
        short[] raw = s.halves;
        src.getShorts(offset, raw, h);
        for (int i = 0; i < h; i++) {
          dst[i] = Float.intBitsToFloat(raw[i] << 16);
        }
      }
      case F16 -> {
        short[] raw = s.halves;
        src.getShorts(offset, raw, h);
        for (int i = 0; i < h; i++) {
          dst[i] = F16_TO_FLOAT[raw[i] & 0xFFFF];
        }
      }
      default -> throw new IllegalArgumentException("dtype " + d + " cannot be converted");
    }
  }

  /**
   * Rounds {@code h} floats of {@code src} to dtype {@code d} at byte {@code offset} of {@code
   * dst}.
   */
  public static void encodeRow(
      DType d, float[] src, HostBuffer dst, long offset, int h, RowScratch s) {
    switch (d) {
      case F32 -> {
        int[] w = s.words;
        for (int i = 0; i < h; i++) {
          w[i] = f32Bits(src[i]);
        }
        dst.putInts(offset, w, h);
      }
      case BF16 -> {
        short[] raw = s.halves;
        for (int i = 0; i < h; i++) {
          raw[i] = floatToBf16(src[i]);
        }
        dst.putShorts(offset, raw, h);
      }
      case F16 -> {
        short[] raw = s.halves;
        for (int i = 0; i < h; i++) {
          raw[i] = floatToF16(src[i]);
        }
        dst.putShorts(offset, raw, h);
      }
      default -> throw new IllegalArgumentException("dtype " + d + " cannot be converted");
    }
  }
}
