package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The contract's seed scale cases on the GPU ({@code (N-1)*H = 2^31} elements), and a batch of more
 * than 2^31 slots, each checked against a closed-form expectation.
 */
@Tag("gpu")
class CudaScaleTest extends GpuLeakCheck {

  /** N = 2^18 (+1), H = 2^13, BF16, K = 1, E = 4, ids t % 4: rows of t%4==0 ascending, then 1... */
  @ParameterizedTest
  @ValueSource(longs = {1L << 18, (1L << 18) + 1})
  void seedScaleCase(long n) {
    int h = 1 << 13;
    long rowBytes = 2L * h;
    MoeKernels gpu = MoeKernels.on(CudaSupport.backend());
    requireDeviceBytes(3 * n * rowBytes);
    SplittableRandom rnd = Seeds.fresh("CudaScaleTest.seedScaleCase N=" + n);
    try (HostBuffer tokens = HostBuffer.allocate(n * rowBytes);
        HostBuffer routing = HostBuffer.allocate(n * 4)) {
      fillRandomParallel(rnd.nextLong(), tokens);
      for (long t = 0; t < n; t++) {
        routing.putInt(4 * t, (int) (t % 4));
      }
      PermuteInput in = new PermuteInput(tokens, n, h, DType.BF16, routing, 1, null);
      try (PermuteResult r = gpu.permute(in, PermuteOptions.of(4))) {
        assertEquals(n, r.numOut());
        AtomicLong bad = new AtomicLong(-1);
        long[] offsets = r.layout().offsets();
        for (int e = 0; e < 4; e++) {
          assertEquals((n - e + 3) / 4, r.tokensPerExpert()[e], "tokens of expert " + e);
        }
        CpuPool.common()
            .forRange(
                n,
                1024,
                (from, to) -> {
                  for (long i = from; i < to; i++) {
                    int e = 0;
                    while (offsets[e + 1] <= i) {
                      e++;
                    }
                    long t = 4 * (i - offsets[e]) + e;
                    boolean ok =
                        r.sourceToken().getLong(8 * i) == t
                            && r.sourceSlot().getLong(8 * i) == 0
                            && r.rowIdMap().getInt(4 * t) == i
                            && r.permuted()
                                .contentEquals(i * rowBytes, tokens, t * rowBytes, rowBytes);
                    if (!ok) {
                      bad.compareAndSet(-1, i);
                    }
                  }
                });
        assertEquals(-1, bad.get(), "first output row that is not its source token's row");
      }
    }
  }

  /**
   * N = 2^25, K = 65, H = 1 (2^31 + 2^25 slots), E = 4, mostly -1: slot 0 of every fifth token and
   * slot 64 (slot index above 2^31 for late tokens) of every third token are routed. The row map,
   * sources and rows follow from one pass over the tokens; unpermute gives the sum of the rows.
   */
  @org.junit.jupiter.api.Test
  void moreThan2To31Slots() {
    long n = 1L << 25;
    int k = 65;
    long slots = n * k;
    assertTrue(slots > (1L << 31));
    requireDeviceBytes(2 * slots * 4 + (1L << 30));
    Assumptions.assumeTrue(
        Runtime.getRuntime().maxMemory() > 0 && hostMemory() > 3 * slots * 4,
        "skipped: needs " + 3 * slots * 4 + " bytes of host memory");
    MoeKernels gpu = MoeKernels.on(CudaSupport.backend());
    SplittableRandom rnd = Seeds.fresh("CudaScaleTest.moreThan2To31Slots");
    try (HostBuffer tokens = HostBuffer.allocate(n * 2);
        HostBuffer routing = HostBuffer.allocate(slots * 4)) {
      fillRandomParallel(rnd.nextLong(), tokens);
      routing.fill(0, slots * 4, (byte) 0xFF);
      for (long t = 0; t < n; t++) {
        if (t % 5 == 0) {
          routing.putInt(4 * (t * k), (int) ((t / 5) % 4));
        }
        if (t % 3 == 0) {
          routing.putInt(4 * (t * k + 64), (int) (t % 4));
        }
      }
      PermuteInput in = new PermuteInput(tokens, n, 1, DType.BF16, routing, k, null);
      try (PermuteResult r = gpu.permute(in, PermuteOptions.of(4))) {
        // expected kept counts, then rows in (expert, token, slot) order
        long[] count = new long[4];
        for (long t = 0; t < n; t++) {
          if (t % 5 == 0) {
            count[(int) ((t / 5) % 4)]++;
          }
          if (t % 3 == 0) {
            count[(int) (t % 4)]++;
          }
        }
        long[] next = new long[4];
        for (int e = 1; e < 4; e++) {
          next[e] = next[e - 1] + count[e - 1];
        }
        assertEquals(next[3] + count[3], r.numOut(), "numOut");
        for (long t = 0; t < n; t++) {
          for (int j : new int[] {0, 64}) {
            int e =
                j == 0
                    ? (t % 5 == 0 ? (int) ((t / 5) % 4) : -1)
                    : (t % 3 == 0 ? (int) (t % 4) : -1);
            long s = t * k + j;
            if (e < 0) {
              assertEquals(-1, r.rowIdMap().getInt(4 * s), "rowIdMap[" + t + "][" + j + "]");
              continue;
            }
            long row = next[e]++;
            assertEquals(row, r.rowIdMap().getInt(4 * s), "rowIdMap[" + t + "][" + j + "]");
            assertEquals(t, r.sourceToken().getLong(8 * row), "sourceToken[" + row + "]");
            assertEquals(j, r.sourceSlot().getLong(8 * row), "sourceSlot[" + row + "]");
            assertEquals(tokens.getShort(2 * t), r.permuted().getShort(2 * row), "row " + row);
          }
        }
        // every other slot is -1
        AtomicLong bad = new AtomicLong(-1);
        HostBuffer map = r.rowIdMap();
        CpuPool.common()
            .forRange(
                n,
                1 << 16,
                (from, to) -> {
                  for (long t = from; t < to; t++) {
                    for (int j = 1; j < 64; j++) {
                      if (map.getInt(4 * (t * k + j)) != -1) {
                        bad.compareAndSet(-1, t * k + j);
                      }
                    }
                  }
                });
        assertEquals(-1, bad.get(), "first slot that should be -1");

        // combine back without probs: out[t] = bf16(0 + x + x) for tokens routed twice
        UnpermuteInput u =
            new UnpermuteInput(r.permuted(), r.numOut(), r.rowIdMap(), n, k, 1, DType.BF16, null);
        try (HostBuffer out = gpu.unpermute(u)) {
          for (long t = 0; t < n; t++) {
            float x = Numerics.bf16ToFloat(tokens.getShort(2 * t));
            float acc = 0f;
            if (t % 5 == 0) {
              acc = acc + 1f * x;
            }
            if (t % 3 == 0) {
              acc = acc + 1f * x;
            }
            short want = Numerics.floatToBf16(acc);
            if (out.getShort(2 * t) != want) {
              assertEquals(want, out.getShort(2 * t), "unpermute of token " + t);
            }
          }
        }
      }
    }
  }

  private static void requireDeviceBytes(long bytes) {
    long free = ((CudaBackend) CudaSupport.backend()).device().memoryInfo()[0];
    Assumptions.assumeTrue(
        free > bytes, "skipped: needs " + bytes + " bytes of device memory, " + free + " free");
  }

  private static long hostMemory() {
    var os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    if (os instanceof com.sun.management.OperatingSystemMXBean sun) {
      return sun.getFreeMemorySize();
    }
    return Long.MAX_VALUE;
  }

  /** Random bytes, filled on every core (a seed per range, so the content is reproducible). */
  static void fillRandomParallel(long seed, HostBuffer b) {
    long words = b.size() / 8;
    CpuPool.common()
        .forRange(
            words,
            1 << 20,
            (from, to) -> {
              SplittableRandom r = new SplittableRandom(seed ^ (from * 0x9E3779B97F4A7C15L));
              for (long i = from; i < to; i++) {
                b.putLong(8 * i, r.nextLong());
              }
            });
    for (long i = words * 8; i < b.size(); i++) {
      b.putByte(i, (byte) seed);
    }
  }
}
