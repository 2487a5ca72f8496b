package io.moeprep.kernels.testing;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.CapacityPolicy;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * The contract written out as plainly as possible, for small batches held in Java arrays: a
 * comparison sort of (expert, token, slot) triples, capacity applied by walking that order, padding
 * appended segment by segment, and unpermute with an independent round-to-nearest-even that
 * searches the representable values. Slow and obviously correct; shares no code with the backends.
 */
public final class NaiveOracle {
  private NaiveOracle() {}

  /** What permute must produce. Rows are (token, slot) or (-1, -1) for padding. */
  public record Permuted(
      long[] sourceToken, long[] sourceSlot, int[][] rowIdMap, long[] kept, long[] dropped) {
    public int numOut() {
      return sourceToken.length;
    }
  }

  /**
   * Permute's row layout.
   *
   * @param routing {@code [N][K]} expert ids or -1
   * @param local which experts this rank owns (others act as -1)
   */
  public static Permuted permute(
      int[][] routing, int numExperts, boolean[] local, CapacityPolicy capacity, int align) {
    int n = routing.length;
    List<int[]> order = new ArrayList<>();
    for (int t = 0; t < n; t++) {
      for (int k = 0; k < routing[t].length; k++) {
        int e = routing[t][k];
        if (e >= 0 && local[e]) {
          order.add(new int[] {e, t, k});
        }
      }
    }
    order.sort(
        Comparator.<int[]>comparingInt(a -> a[0])
            .thenComparingInt(a -> a[1])
            .thenComparingInt(a -> a[2]));

    List<int[]> keptSlots = new ArrayList<>();
    long[] kept = new long[numExperts];
    long[] dropped = new long[numExperts];
    for (int[] s : order) {
      boolean keep = true;
      if (capacity instanceof CapacityPolicy.NumOut m) {
        keep = keptSlots.size() < m.numOut();
      } else if (capacity instanceof CapacityPolicy.PerExpert c) {
        keep = kept[s[0]] < c.capacity();
      }
      if (keep) {
        keptSlots.add(s);
        kept[s[0]]++;
      } else {
        dropped[s[0]]++;
      }
    }

    List<long[]> rows = new ArrayList<>();
    for (int e = 0; e < numExperts; e++) {
      long count = 0;
      for (int[] s : keptSlots) {
        if (s[0] == e) {
          rows.add(new long[] {s[1], s[2]});
          count++;
        }
      }
      long target = count;
      if (local[e] && capacity instanceof CapacityPolicy.PerExpert c && c.padToCapacity()) {
        target = c.capacity();
      }
      if (local[e] && align > 1 && target % align != 0) {
        target += align - target % align;
      }
      for (long p = count; p < target; p++) {
        rows.add(new long[] {-1, -1});
      }
    }
    if (capacity instanceof CapacityPolicy.NumOut m) {
      while (rows.size() < m.numOut()) {
        rows.add(new long[] {-1, -1});
      }
    }

    int[][] map = new int[n][];
    for (int t = 0; t < n; t++) {
      map[t] = new int[routing[t].length];
      Arrays.fill(map[t], -1);
    }
    long[] srcT = new long[rows.size()];
    long[] srcK = new long[rows.size()];
    for (int i = 0; i < rows.size(); i++) {
      srcT[i] = rows.get(i)[0];
      srcK[i] = rows.get(i)[1];
      if (srcT[i] >= 0) {
        map[(int) srcT[i]][(int) srcK[i]] = i;
      }
    }
    return new Permuted(srcT, srcK, map, kept, dropped);
  }

  /**
   * Unpermute of one token: {@code round_D(sum_k p * float(x))} accumulated in float32 from +0 in
   * slot order, no fused multiply-add; returns the element bits of dtype {@code d}.
   *
   * @param rows {@code rows[k]} is the element bits of slot k's expert-output row, or null
   */
  public static int[] combineToken(DType d, int[][] rows, float[] probs, int h) {
    int[] out = new int[h];
    for (int i = 0; i < h; i++) {
      float acc = 0f;
      for (int k = 0; k < rows.length; k++) {
        if (rows[k] == null) {
          continue;
        }
        float p = probs == null ? 1f : probs[k];
        float x = widen(d, rows[k][i]);
        float prod = p * x;
        acc = acc + prod;
      }
      out[i] = narrow(d, acc);
    }
    return out;
  }

  /** Element bits of dtype d as a float. */
  public static float widen(DType d, int bits) {
    return switch (d) {
      case F32 -> Float.intBitsToFloat(bits);
      case BF16 -> Float.intBitsToFloat(bits << 16);
      case F16 -> halfValue(bits & 0xFFFF);
      default -> throw new IllegalArgumentException(d.toString());
    };
  }

  /** Round-to-nearest-even of f to dtype d, NaN canonical, as element bits. */
  public static int narrow(DType d, float f) {
    if (Float.isNaN(f)) {
      return switch (d) {
        case F32 -> 0x7FC00000;
        case BF16 -> 0x7FC0;
        case F16 -> 0x7E00;
        default -> throw new IllegalArgumentException(d.toString());
      };
    }
    return switch (d) {
      case F32 -> Float.floatToRawIntBits(f);
      case BF16 -> nearest(f, BF16_POSITIVE) | (f < 0 || isNegZero(f) ? 0x8000 : 0);
      case F16 -> nearest(f, F16_POSITIVE) | (f < 0 || isNegZero(f) ? 0x8000 : 0);
      default -> throw new IllegalArgumentException(d.toString());
    };
  }

  private static boolean isNegZero(float f) {
    return Float.floatToRawIntBits(f) == 0x80000000;
  }

  // Every non-negative finite value of the type, ascending, then +inf standing at the next
  // binade step (values at or past the midpoint to it round to infinity).
  private static final double[] BF16_POSITIVE =
      positives(0x7F80, b -> (double) Float.intBitsToFloat(b << 16), 0x1p128);
  private static final double[] F16_POSITIVE =
      positives(0x7C00, b -> (double) halfValue(b), 65536.0);

  private static double[] positives(
      int infBits, java.util.function.IntToDoubleFunction value, double infStandIn) {
    double[] v = new double[infBits + 1];
    for (int b = 0; b < infBits; b++) {
      v[b] = value.applyAsDouble(b);
    }
    v[infBits] = infStandIn;
    return v;
  }

  /** Bits of the representable value nearest |f|, ties to the even bit pattern. */
  private static int nearest(float f, double[] table) {
    double a = Math.abs((double) f);
    if (Double.isInfinite(a)) {
      return table.length - 1;
    }
    int lo = 0;
    int hi = table.length - 1;
    if (a >= table[hi]) {
      return hi;
    }
    while (hi - lo > 1) {
      int mid = (lo + hi) >>> 1;
      if (table[mid] <= a) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    double dl = a - table[lo];
    double dh = table[hi] - a;
    if (dl < dh) {
      return lo;
    }
    if (dh < dl) {
      return hi;
    }
    return (lo & 1) == 0 ? lo : hi;
  }

  /** Value of F16 bits by the IEEE formula. */
  private static float halfValue(int h) {
    int sign = (h >>> 15) & 1;
    int exp = (h >>> 10) & 0x1F;
    int mant = h & 0x3FF;
    double v;
    if (exp == 0) {
      v = Math.scalb((double) mant, -24);
    } else if (exp == 31) {
      v = mant == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
    } else {
      v = Math.scalb(1.0 + mant / 1024.0, exp - 15);
    }
    return (float) (sign == 1 ? -v : v);
  }
}
