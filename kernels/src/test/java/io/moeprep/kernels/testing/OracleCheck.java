package io.moeprep.kernels.testing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.SplittableRandom;

/**
 * Runs permute and unpermute of a batch on any backend and compares every output with {@link
 * NaiveOracle}: row layout, row map, sources, probs, counts, permuted bytes and combined bytes.
 */
public final class OracleCheck {
  private OracleCheck() {}

  /** Permute and unpermute b with options, and compare every output with the oracle's. */
  public static void check(
      MoeKernels kernels,
      RandomBatch b,
      PermuteOptions options,
      boolean withProbs,
      SplittableRandom rnd) {
    int n = (int) b.numTokens;
    int k = b.topK;
    int h = b.hidden;
    int es = b.dtype.bytes();
    int[][] routing = new int[n][k];
    for (int t = 0; t < n; t++) {
      for (int j = 0; j < k; j++) {
        routing[t][j] = b.routing.getInt(4L * (t * k + j));
      }
    }
    NaiveOracle.Permuted want =
        NaiveOracle.permute(
            routing,
            options.numExperts(),
            options.localExperts(),
            options.capacity(),
            options.align());
    try (PermuteResult got = kernels.permute(b.input(withProbs), options)) {
      String ctx = b.dtype + " N=" + n + " H=" + h + " K=" + k + " " + options;
      assertEquals(want.numOut(), got.numOut(), ctx);
      assertArrayEquals(want.kept(), got.tokensPerExpert(), ctx);
      assertArrayEquals(want.dropped(), got.layout().droppedPerExpert(), ctx);
      long rowBytes = (long) h * es;
      for (int i = 0; i < want.numOut(); i++) {
        long t = want.sourceToken()[i];
        assertEquals(t, got.sourceToken().getLong(8L * i), ctx + " sourceToken[" + i + "]");
        assertEquals(
            want.sourceSlot()[i], got.sourceSlot().getLong(8L * i), ctx + " sourceSlot[" + i + "]");
        if (t >= 0) {
          assertEquals(
              true,
              got.permuted().contentEquals(i * rowBytes, b.tokens, t * rowBytes, rowBytes),
              ctx + " permuted row " + i + " != token " + t);
        } else {
          for (long x = 0; x < rowBytes; x++) {
            assertEquals(0, got.permuted().getByte(i * rowBytes + x), ctx + " padding row " + i);
          }
        }
        if (withProbs) {
          int wantBits = t < 0 ? 0 : b.probs.getInt(4L * (t * k + want.sourceSlot()[i]));
          assertEquals(wantBits, got.permutedProbs().getInt(4L * i), ctx + " prob " + i);
        }
      }
      for (int t = 0; t < n; t++) {
        for (int j = 0; j < k; j++) {
          assertEquals(
              want.rowIdMap()[t][j],
              got.rowIdMap().getInt(4L * (t * k + j)),
              ctx + " rowIdMap[" + t + "][" + j + "]");
        }
      }
      if (!b.dtype.isFp8()) {
        checkUnpermute(kernels, b, got, want, withProbs, rnd);
      }
    }
  }

  /** Unpermute random expert outputs (every bit pattern) and compare with the oracle's combine. */
  private static void checkUnpermute(
      MoeKernels kernels,
      RandomBatch b,
      PermuteResult perm,
      NaiveOracle.Permuted want,
      boolean withProbs,
      SplittableRandom rnd) {
    int n = (int) b.numTokens;
    int k = b.topK;
    int h = b.hidden;
    int es = b.dtype.bytes();
    long numOut = perm.numOut();
    try (HostBuffer expertOut = HostBuffer.allocate(numOut * h * es)) {
      RandomBatch.fillRandom(rnd, expertOut);
      UnpermuteInput in =
          new UnpermuteInput(
              expertOut, numOut, perm.rowIdMap(), n, k, h, b.dtype, withProbs ? b.probs : null);
      try (HostBuffer out = kernels.unpermute(in)) {
        for (int t = 0; t < n; t++) {
          int[][] rows = new int[k][];
          float[] p = new float[k];
          for (int j = 0; j < k; j++) {
            int row = want.rowIdMap()[t][j];
            p[j] = b.probs.getFloat(4L * (t * k + j));
            if (row >= 0) {
              rows[j] = new int[h];
              for (int i = 0; i < h; i++) {
                rows[j][i] = element(expertOut, ((long) row * h + i) * es, es);
              }
            }
          }
          int[] wantBits = NaiveOracle.combineToken(b.dtype, rows, withProbs ? p : null, h);
          for (int i = 0; i < h; i++) {
            assertEquals(
                wantBits[i],
                element(out, ((long) t * h + i) * es, es),
                b.dtype + " unpermute token " + t + " element " + i);
          }
        }
      }
    }
  }

  private static int element(HostBuffer b, long off, int es) {
    return es == 4 ? b.getInt(off) : b.getShort(off) & 0xFFFF;
  }
}
