package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.LeakCheck;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** The expected results shared by the job's verifier and the Spark tests. */
@ExtendWith(LeakCheck.class)
class ReferenceBatchTest {
  private static final int H = 3;

  private static byte[] f32(float... v) {
    ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
    for (float x : v) {
      b.putFloat(x);
    }
    return b.array();
  }

  /** Token t: hidden (t+1, t+2, t+3); two slots weighted 0.5 each. */
  private static List<ReferenceBatch.Token> tokens(int[][] ids) {
    List<ReferenceBatch.Token> out = new ArrayList<>();
    for (int t = 0; t < ids.length; t++) {
      out.add(
          new ReferenceBatch.Token(
              100 + t, f32(t + 1, t + 2, t + 3), ids[t], new float[] {0.5f, 0.5f}));
    }
    return out;
  }

  @Test
  void ranksPermuteAndTheirIdentityCombineGivesTheWeightedTokensBack() {
    int[][] ids = {{0, 3}, {2, -1}, {1, 2}, {3, 0}};
    List<ReferenceBatch.Token> toks = tokens(ids);
    try (ReferenceBatch b = ReferenceBatch.of(toks, H, DType.F32, 2, true)) {
      List<PermuteResult> ranks = new ArrayList<>();
      try {
        for (int r = 0; r < 2; r++) {
          ranks.add(b.permute(PermuteOptions.forRank(4, 2, r)));
        }
        // rank 0 holds experts 0 and 1: tokens 0 and 3 (expert 0), then 2 (expert 1)
        assertEquals(3, ranks.get(0).numOut());
        assertArrayEquals(f32(1, 2, 3), ReferenceBatch.row(ranks.get(0).permuted(), 0, 12));
        assertArrayEquals(f32(4, 5, 6), ReferenceBatch.row(ranks.get(0).permuted(), 1, 12));
        assertArrayEquals(f32(3, 4, 5), ReferenceBatch.row(ranks.get(0).permuted(), 2, 12));
        try (HostBuffer combined = b.combineIdentity(ranks)) {
          assertEquals(4L * 12, combined.size());
          for (int t = 0; t < 4; t++) {
            float w = ids[t][1] < 0 ? 0.5f : 1f; // a masked slot adds nothing
            assertArrayEquals(
                f32(w * (t + 1), w * (t + 2), w * (t + 3)),
                ReferenceBatch.row(combined, t, 12),
                "token " + t);
          }
        }
      } finally {
        ranks.forEach(PermuteResult::close);
      }
    }
  }

  @Test
  void withoutProbsEverySlotWeighsOne() {
    try (ReferenceBatch b =
            ReferenceBatch.of(tokens(new int[][] {{0, 1}}), H, DType.F32, 2, false);
        PermuteResult r = b.permute(PermuteOptions.of(2));
        HostBuffer combined = b.combineIdentity(List.of(r))) {
      assertEquals(null, b.probs());
      assertArrayEquals(f32(2, 4, 6), ReferenceBatch.row(combined, 0, 12));
    }
  }

  @Test
  void aTokenOfTheWrongSizeIsNamedByItsId() {
    List<ReferenceBatch.Token> toks = new ArrayList<>(tokens(new int[][] {{0, 1}, {1, 0}}));
    toks.set(1, new ReferenceBatch.Token(77, new byte[8], new int[] {0, 1}, null));
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> ReferenceBatch.of(toks, H, DType.F32, 2, false));
    assertEquals(
        "token_id=77 has 8 hidden bytes and 2 expert ids: expected 12 and 2", e.getMessage());
    toks.set(1, new ReferenceBatch.Token(78, new byte[12], new int[] {0, 1}, null));
    e =
        assertThrows(
            IllegalArgumentException.class, () -> ReferenceBatch.of(toks, H, DType.F32, 2, true));
    assertTrue(e.getMessage().startsWith("token_id=78 has no probs"), e.getMessage());
  }
}
