package io.moeprep.kernels.contract;

import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Validation at the API boundary, before any work: every message names the argument, the
 * constraint, the offending value and where it is ({@code routing[t=17][k=3] = 300 is out of range
 * [0, 256) or -1}).
 */
public final class ContractChecks {
  private ContractChecks() {}

  /** Checks shapes, buffer sizes and every routing entry of a permute. */
  public static void checkPermute(PermuteInput in, PermuteOptions options) {
    nonNegative("numTokens", in.numTokens());
    atLeastOne("hidden", in.hidden());
    atLeastOne("topK", in.topK());
    if (in.dtype() == null) {
      throw new IllegalArgumentException("dtype is null: must be one of F32, BF16, F16, FP8_*");
    }
    long slots = Math.multiplyExact(in.numTokens(), (long) in.topK());
    holds("tokens", in.tokens(), Math.multiplyExact(in.numTokens(), in.rowBytes()));
    holds("routing", in.routing(), Math.multiplyExact(slots, 4L));
    if (in.probs() != null) {
      holds("probs", in.probs(), Math.multiplyExact(slots, 4L));
    }
    checkIds("routing", in.routing(), in.numTokens(), in.topK(), options.numExperts());
  }

  /** Checks shapes, buffer sizes, dtype and every row id of an unpermute. */
  public static void checkUnpermute(UnpermuteInput in) {
    nonNegative("numTokens", in.numTokens());
    nonNegative("numOut", in.numOut());
    atLeastOne("hidden", in.hidden());
    atLeastOne("topK", in.topK());
    if (in.numOut() > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "numOut = " + in.numOut() + " is invalid: must be < 2^31 (row ids are int32)");
    }
    if (in.dtype().isFp8()) {
      throw new IllegalArgumentException(
          "dtype = "
              + in.dtype()
              + " cannot be combined: FP8 expert outputs need a scale, which unpermute does not"
              + " take; dequantize them to bf16 or f32 first");
    }
    long slots = Math.multiplyExact(in.numTokens(), (long) in.topK());
    holds("expertOut", in.expertOut(), Math.multiplyExact(in.numOut(), in.rowBytes()));
    holds("rowIdMap", in.rowIdMap(), Math.multiplyExact(slots, 4L));
    if (in.probs() != null) {
      holds("probs", in.probs(), Math.multiplyExact(slots, 4L));
    }
    checkIds("rowIdMap", in.rowIdMap(), in.numTokens(), in.topK(), in.numOut());
  }

  /** Checks that {@code sortedIndex} is a permutation and the split sizes add up. */
  public static void checkChunkSort(ChunkSortInput in) {
    nonNegative("numRows", in.numRows());
    atLeastOne("hidden", in.hidden());
    long[] sizes = in.splitSizes();
    int[] order = in.sortedIndex();
    if (sizes.length != order.length) {
      throw new IllegalArgumentException(
          "sortedIndex has "
              + order.length
              + " entries but splitSizes has "
              + sizes.length
              + ": they must be equal");
    }
    long sum = 0;
    for (int i = 0; i < sizes.length; i++) {
      if (sizes[i] < 0) {
        throw new IllegalArgumentException(
            "splitSizes[" + i + "] = " + sizes[i] + " is invalid: must be >= 0");
      }
      sum = Math.addExact(sum, sizes[i]);
    }
    if (sum != in.numRows()) {
      throw new IllegalArgumentException(
          "sum(splitSizes) = " + sum + " must equal the row count " + in.numRows());
    }
    boolean[] seen = new boolean[order.length];
    for (int i = 0; i < order.length; i++) {
      int c = order[i];
      if (c < 0 || c >= order.length) {
        throw new IllegalArgumentException(
            "sortedIndex["
                + i
                + "] = "
                + c
                + " is out of range [0, "
                + order.length
                + "): it must be a permutation");
      }
      if (seen[c]) {
        throw new IllegalArgumentException(
            "sortedIndex[" + i + "] = " + c + " appears twice: it must be a permutation");
      }
      seen[c] = true;
    }
    holds("rows", in.rows(), Math.multiplyExact(in.numRows(), in.rowBytes()));
    if (in.probs() != null) {
      holds("probs", in.probs(), Math.multiplyExact(in.numRows(), 4L));
    }
  }

  /**
   * Checks that every int32 entry of an {@code n x k} map is {@code -1} or in {@code [0, bound)};
   * the error names the first offending entry in token-major order.
   */
  static void checkIds(String name, HostBuffer ids, long n, int k, long bound) {
    long slots = n * k;
    AtomicLong firstBad = new AtomicLong(Long.MAX_VALUE);
    long base = slots == 0 ? 0 : ids.address();
    var u = HostBuffer.unsafe();
    CpuPool.forRange(
        slots,
        1 << 13,
        (from, to) -> {
          for (long i = from; i < to; i++) {
            int v = u.getInt(base + 4 * i);
            if (v < -1 || v >= bound) {
              firstBad.accumulateAndGet(i, Math::min);
              return;
            }
          }
        });
    long i = firstBad.get();
    if (i != Long.MAX_VALUE) {
      throw idOutOfRange(name, i, k, u.getInt(base + 4 * i), bound);
    }
  }

  /** {@code name[t=..][k=..] = v is out of range [0, bound) or -1} for flat slot {@code i}. */
  static IllegalArgumentException idOutOfRange(String name, long i, int k, long v, long bound) {
    return new IllegalArgumentException(
        name
            + "[t="
            + (i / k)
            + "][k="
            + (i % k)
            + "] = "
            + v
            + " is out of range [0, "
            + bound
            + ") or -1");
  }

  static void nonNegative(String name, long v) {
    if (v < 0) {
      throw new IllegalArgumentException(name + " = " + v + " is invalid: must be >= 0");
    }
  }

  static void atLeastOne(String name, long v) {
    if (v < 1) {
      throw new IllegalArgumentException(name + " = " + v + " is invalid: must be >= 1");
    }
  }

  static void holds(String name, HostBuffer b, long bytes) {
    if (b == null) {
      if (bytes == 0) {
        return;
      }
      throw new IllegalArgumentException(name + " is null: it must hold " + bytes + " bytes");
    }
    if (b.isClosed()) {
      throw new IllegalArgumentException(name + " (" + b + ") is closed");
    }
    if (b.size() < bytes) {
      throw new IllegalArgumentException(
          name + " holds " + b.size() + " bytes: the shape needs " + bytes);
    }
  }
}
