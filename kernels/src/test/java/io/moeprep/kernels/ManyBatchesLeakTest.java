package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * 10,000 batches through permute and unpermute on the CPU backend, failures included: host memory
 * in use (the buffers' own accounting) is back at its starting level afterwards.
 */
public class ManyBatchesLeakTest {

  @Test
  void tenThousandBatchesLeaveNoHostMemoryBehind() {
    long live = HostBuffer.liveBuffers();
    long bytes = HostBuffer.bytesInUse();
    long rows = runBatches(MoeKernels.on(CpuBackend.INSTANCE), 10_000);
    assertEquals(live, HostBuffer.liveBuffers(), "live host buffers after 10,000 batches");
    assertEquals(bytes, HostBuffer.bytesInUse(), "host bytes in use after 10,000 batches");
    System.out.println("10,000 batches, " + rows + " permuted rows, no host memory left behind");
  }

  /**
   * Permutes and unpermutes {@code batches} random batches on {@code kernels}, every hundredth one
   * bad (refused); returns the permuted rows.
   */
  public static long runBatches(MoeKernels cpu, int batches) {
    SplittableRandom rnd = Seeds.fresh("ManyBatchesLeakTest on " + cpu.backend().name());
    long rows = 0;
    for (int i = 0; i < batches; i++) {
      int n = 1 + rnd.nextInt(32);
      int k = 1 + rnd.nextInt(4);
      try (RandomBatch b =
          RandomBatch.create(rnd, n, 1 + rnd.nextInt(64), k, 16, DType.BF16, 0.3)) {
        if (i % 100 == 7) {
          b.routing.putInt(0, 99); // a bad batch: refused before any allocation
          try {
            cpu.permute(b.input(true), PermuteOptions.of(16));
            throw new AssertionError("expected a validation error");
          } catch (IllegalArgumentException expected) {
            continue;
          }
        }
        try (PermuteResult r = cpu.permute(b.input(true), PermuteOptions.forRank(16, 4, i % 4));
            HostBuffer out =
                cpu.unpermute(
                    new UnpermuteInput(
                        r.permuted(),
                        r.numOut(),
                        r.rowIdMap(),
                        n,
                        k,
                        b.hidden,
                        b.dtype,
                        b.probs))) {
          rows += r.numOut();
          assertEquals((long) n * b.hidden * 2, out.size());
        }
      }
    }
    return rows;
  }
}
