package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
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

  /**
   * Checks shapes, buffer sizes and every routing entry of a permute; the entries are scanned on
   * {@code pool}.
   */
  public static void checkPermute(PermuteInput in, PermuteOptions options, CpuPool pool) {
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
    checkIds("routing", in.routing(), in.numTokens(), in.topK(), options.numExperts(), pool);
  }

  /**
   * Checks shapes, buffer sizes, dtype and every row id of an unpermute; the row ids are scanned on
   * {@code pool}.
   */
  public static void checkUnpermute(UnpermuteInput in, CpuPool pool) {
    nonNegative("numTokens", in.numTokens());
    nonNegative("numOut", in.numOut());
    atLeastOne("hidden", in.hidden());
    atLeastOne("topK", in.topK());
    if (in.numOut() > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "numOut = " + in.numOut() + " is invalid: must be < 2^31 (row ids are int32)");
    }
    requireCombinable(in.dtype());
    long slots = Math.multiplyExact(in.numTokens(), (long) in.topK());
    holds("expertOut", in.expertOut(), Math.multiplyExact(in.numOut(), in.rowBytes()));
    holds("rowIdMap", in.rowIdMap(), Math.multiplyExact(slots, 4L));
    if (in.probs() != null) {
      holds("probs", in.probs(), Math.multiplyExact(slots, 4L));
    }
    checkIds("rowIdMap", in.rowIdMap(), in.numTokens(), in.topK(), in.numOut(), pool);
  }

  /** Checks that {@code sortedIndex} is a permutation, the split sizes add up, and the buffers. */
  public static void checkChunkSort(ChunkSortInput in) {
    nonNegative("numRows", in.numRows());
    atLeastOne("hidden", in.hidden());
    checkChunks(in.splitSizes(), in.sortedIndex(), in.numRows());
    holds("rows", in.rows(), Math.multiplyExact(in.numRows(), in.rowBytes()));
    if (in.probs() != null) {
      holds("probs", in.probs(), Math.multiplyExact(in.numRows(), 4L));
    }
  }

  /**
   * Checks the chunks of a chunk sort: one order entry per chunk, every size {@code >= 0}, the
   * sizes adding up to {@code numRows}, and {@code sortedIndex} a permutation of the chunks.
   */
  public static void checkChunks(long[] splitSizes, int[] sortedIndex, long numRows) {
    if (splitSizes == null || sortedIndex == null) {
      throw new IllegalArgumentException("splitSizes and sortedIndex must not be null");
    }
    if (splitSizes.length != sortedIndex.length) {
      throw new IllegalArgumentException(
          "sortedIndex has "
              + sortedIndex.length
              + " entries but splitSizes has "
              + splitSizes.length
              + ": they must be equal");
    }
    long sum = 0;
    for (int i = 0; i < splitSizes.length; i++) {
      if (splitSizes[i] < 0) {
        throw new IllegalArgumentException(
            "splitSizes[" + i + "] = " + splitSizes[i] + " is invalid: must be >= 0");
      }
      sum = Math.addExact(sum, splitSizes[i]);
    }
    if (sum != numRows) {
      throw new IllegalArgumentException(
          "sum(splitSizes) = " + sum + " must equal the row count " + numRows);
    }
    checkPermutation("sortedIndex", sortedIndex);
  }

  /**
   * Checks that {@code order} is a permutation of {@code [0, order.length)}: the error names the
   * first entry out of range or seen twice.
   */
  public static void checkPermutation(String name, int[] order) {
    boolean[] seen = new boolean[order.length];
    for (int i = 0; i < order.length; i++) {
      int c = order[i];
      if (c < 0 || c >= order.length) {
        throw new IllegalArgumentException(
            name
                + "["
                + i
                + "] = "
                + c
                + " is out of range [0, "
                + order.length
                + "): it must be a permutation");
      }
      if (seen[c]) {
        throw new IllegalArgumentException(
            name + "[" + i + "] = " + c + " appears twice: it must be a permutation");
      }
      seen[c] = true;
    }
  }

  /** Fails for the FP8 types, which combine would need a scale for. */
  public static void requireCombinable(DType dtype) {
    if (dtype.isFp8()) {
      throw new IllegalArgumentException(
          "dtype = "
              + dtype
              + " cannot be combined: FP8 expert outputs need a scale, which unpermute does not"
              + " take; dequantize them to bf16 or f32 first");
    }
  }

  /**
   * Checks that every int32 entry of an {@code n x k} map is {@code -1} or in {@code [0, bound)},
   * scanning on {@code pool}; the error names the first offending entry in token-major order.
   */
  public static void checkIds(
      String name, HostBuffer ids, long n, int k, long bound, CpuPool pool) {
    long slots = n * k;
    AtomicLong firstBad = new AtomicLong(Long.MAX_VALUE);
    pool.forRange(
        slots,
        1 << 13,
        (from, to) -> {
          for (long i = from; i < to; i++) {
            int v = ids.getInt(4 * i);
            if (v < -1 || v >= bound) {
              firstBad.accumulateAndGet(i, Math::min);
              return;
            }
          }
        });
    long i = firstBad.get();
    if (i != Long.MAX_VALUE) {
      throw idOutOfRange(name, i, k, ids.getInt(4 * i), bound);
    }
  }

  /**
   * The error of a bad map entry: {@code name[t=..][k=..] = v is out of range [0, bound) or -1} for
   * flat slot {@code i} of a map with {@code k} slots per token.
   */
  public static IllegalArgumentException idOutOfRange(
      String name, long i, int k, long v, long bound) {
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

  /** Fails unless {@code v >= 0}: {@code name = v is invalid: must be >= 0}. */
  public static void nonNegative(String name, long v) {
    if (v < 0) {
      throw new IllegalArgumentException(name + " = " + v + " is invalid: must be >= 0");
    }
  }

  /** Fails unless {@code v >= 1}: {@code name = v is invalid: must be >= 1}. */
  public static void atLeastOne(String name, long v) {
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
