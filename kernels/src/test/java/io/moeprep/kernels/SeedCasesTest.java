package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.HostBuffers;
import io.moeprep.kernels.testing.LeakCheck;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The cases of the bug report and the contract, exactly as written there. */
@ExtendWith(LeakCheck.class)
class SeedCasesTest {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  /** Routing map of the report's -1 repro (K=2, E=4): rows from tokens 0, 3, 3, 6, 1, 2, 4, 5. */
  @Test
  void eightByTwoRoutingExample() {
    int[][] routing = {{0, -1}, {-1, 2}, {-1, 2}, {1, 1}, {3, -1}, {3, -1}, {-1, 1}, {-1, -1}};
    try (HostBuffer tokens = rowsNumbered(8, 16);
        HostBuffer ids = HostBuffers.ints(routing);
        PermuteResult r =
            CPU.permute(
                new PermuteInput(tokens, 8, 16, DType.F32, ids, 2, null), PermuteOptions.of(4))) {
      assertEquals(8, r.numOut());
      long[] src = new long[8];
      for (int i = 0; i < 8; i++) {
        src[i] = r.sourceToken().getLong(8L * i);
        assertTrue(r.permuted().contentEquals(i * 64L, tokens, src[i] * 64, 64), "row " + i);
      }
      assertArrayEquals(new long[] {0, 3, 3, 6, 1, 2, 4, 5}, src);
      assertArrayEquals(new long[] {1, 3, 2, 2}, r.tokensPerExpert());
      int[] wantMap = {0, -1, -1, 4, -1, 5, 1, 2, 6, -1, 7, -1, -1, 3, -1, -1};
      for (int s = 0; s < 16; s++) {
        assertEquals(wantMap[s], r.rowIdMap().getInt(4L * s), "rowIdMap slot " + s);
      }
    }
  }

  /**
   * The contract's EP example: E=4, R=2; a, b, c routed to [0,3], [2,1], [3,2]. Rank 0 permutes a,
   * b; rank 1 permutes b, c, a, c.
   */
  @Test
  void twoRankExpertParallelExample() {
    int[][] routing = {{0, 3}, {2, 1}, {3, 2}};
    try (HostBuffer tokens = rowsNumbered(3, 5);
        HostBuffer ids = HostBuffers.ints(routing)) {
      PermuteInput in = new PermuteInput(tokens, 3, 5, DType.F32, ids, 2, null);
      try (PermuteResult r0 = CPU.permute(in, PermuteOptions.forRank(4, 2, 0));
          PermuteResult r1 = CPU.permute(in, PermuteOptions.forRank(4, 2, 1))) {
        assertArrayEquals(new long[] {0, 1}, sources(r0));
        assertArrayEquals(new long[] {1, 2, 0, 2}, sources(r1));
        assertArrayEquals(new long[] {1, 1, 0, 0}, r0.tokensPerExpert());
        assertArrayEquals(new long[] {0, 0, 2, 2}, r1.tokensPerExpert());
        assertArrayEquals(new int[] {0, -1, -1, 1, -1, -1}, map(r0, 6));
        assertArrayEquals(new int[] {-1, 2, 0, -1, 3, 1}, map(r1, 6));
      }
    }
  }

  /**
   * The scale case: N tokens of H = 2^13 BF16, K = 1, E = 4, ids t % 4; for N = 2^18 + 1 the last
   * row starts at element 2^31. Every output row must equal its source row bit for bit, and
   * unpermute must give the tokens back.
   */
  @ParameterizedTest(name = "N={0}")
  @ValueSource(longs = {1L << 18, (1L << 18) + 1})
  void scaleCaseAcrossTheInt32Boundary(long n) {
    int h = 1 << 13;
    long rowBytes = 2L * h;
    try (HostBuffer tokens = HostBuffer.allocate(n * rowBytes);
        HostBuffer ids = HostBuffer.allocate(n * 4)) {
      // finite, non-zero BF16 values unique per (token, element), so a round trip is exact
      CpuPool.common()
          .forRange(
              n,
              256,
              (from, to) -> {
                for (long t = from; t < to; t++) {
                  ids.putInt(4 * t, (int) (t % 4));
                  for (int i = 0; i < h; i += 4) {
                    long x = mix(t * h + i);
                    long v = 0;
                    for (int j = 0; j < 4; j++) {
                      long bits =
                          0x3F80 | ((x >>> (16 * j)) & 0x7F) | (((x >>> (16 * j + 7)) & 1) << 15);
                      v |= bits << (16 * j);
                    }
                    tokens.putLong(t * rowBytes + 2L * i, v);
                  }
                }
              });
      PermuteInput in = new PermuteInput(tokens, n, h, DType.BF16, ids, 1, null);
      try (PermuteResult r = CPU.permute(in, PermuteOptions.of(4))) {
        assertEquals(n, r.numOut());
        long perExpert0 = (n + 3) / 4;
        AtomicLong firstBad = new AtomicLong(-1);
        CpuPool.common()
            .forRange(
                n,
                1024,
                (from, to) -> {
                  for (long i = from; i < to; i++) {
                    // expert e holds tokens e, e+4, ... ascending
                    long e = i < perExpert0 ? 0 : 1 + (i - perExpert0) / (n / 4);
                    long startE = e == 0 ? 0 : perExpert0 + (e - 1) * (n / 4);
                    long t = e + 4 * (i - startE);
                    if (r.sourceToken().getLong(8 * i) != t
                        || r.rowIdMap().getInt(4 * t) != (int) i
                        || !r.permuted()
                            .contentEquals(i * rowBytes, tokens, t * rowBytes, rowBytes)) {
                      firstBad.compareAndSet(-1, i);
                    }
                  }
                });
        assertEquals(-1, firstBad.get(), "first wrong output row");
        if (n > 1L << 18) {
          UnpermuteInput back =
              new UnpermuteInput(r.permuted(), n, r.rowIdMap(), n, 1, h, DType.BF16, null);
          try (HostBuffer out = CPU.unpermute(back)) {
            AtomicLong bad = new AtomicLong(-1);
            CpuPool.common()
                .forRange(
                    n,
                    1024,
                    (from, to) -> {
                      if (!out.contentEquals(
                          from * rowBytes, tokens, from * rowBytes, (to - from) * rowBytes)) {
                        bad.compareAndSet(-1, from);
                      }
                    });
            assertEquals(-1, bad.get(), "unpermute(permute(x)) != x from token");
          }
        }
      }
    }
  }

  private static long mix(long z) {
    z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
    z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
    return z ^ (z >>> 31);
  }

  /** n rows of h F32 elements; row t holds the value t in every element. */
  static HostBuffer rowsNumbered(long n, int h) {
    HostBuffer b = HostBuffer.allocate(n * h * 4L);
    for (long t = 0; t < n; t++) {
      for (int i = 0; i < h; i++) {
        b.putFloat((t * h + i) * 4, t);
      }
    }
    return b;
  }

  private static long[] sources(PermuteResult r) {
    long[] s = new long[(int) r.numOut()];
    for (int i = 0; i < s.length; i++) {
      s[i] = r.sourceToken().getLong(8L * i);
    }
    return s;
  }

  private static int[] map(PermuteResult r, int slots) {
    int[] m = new int[slots];
    for (int i = 0; i < slots; i++) {
      m[i] = r.rowIdMap().getInt(4L * i);
    }
    return m;
  }
}
