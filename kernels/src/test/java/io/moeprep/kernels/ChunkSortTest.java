package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Chunk sort against the row-by-row definition, empty chunks included. */
@ExtendWith(LeakCheck.class)
class ChunkSortTest {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  @Test
  void regroupsChunksInTheGivenOrder() {
    SplittableRandom rnd = Seeds.fresh("ChunkSortTest");
    for (int round = 0; round < 50; round++) {
      int chunks = 1 + rnd.nextInt(40);
      long[] sizes = new long[chunks];
      long total = 0;
      for (int c = 0; c < chunks; c++) {
        sizes[c] = rnd.nextInt(4) == 0 ? 0 : rnd.nextInt(300);
        total += sizes[c];
      }
      int[] order = new int[chunks];
      for (int c = 0; c < chunks; c++) {
        order[c] = c;
      }
      for (int c = chunks - 1; c > 0; c--) {
        int j = rnd.nextInt(c + 1);
        int x = order[c];
        order[c] = order[j];
        order[j] = x;
      }
      int h = 1 + rnd.nextInt(9);
      DType d = DType.values()[rnd.nextInt(DType.values().length)];
      long rowBytes = (long) h * d.bytes();
      try (HostBuffer rows = HostBuffer.allocate(total * rowBytes);
          HostBuffer probs = HostBuffer.allocate(total * 4)) {
        RandomBatch.fillRandom(rnd, rows);
        RandomBatch.fillRandom(rnd, probs);
        ChunkSortInput in = new ChunkSortInput(rows, total, h, d, sizes, order, probs);
        long[] srcOff = in.sourceOffsets();
        try (ChunkSortResult r = CPU.chunkSort(in)) {
          long out = 0;
          for (int c : order) {
            for (long i = 0; i < sizes[c]; i++, out++) {
              long src = srcOff[c] + i;
              assertTrue(r.rows().contentEquals(out * rowBytes, rows, src * rowBytes, rowBytes));
              assertEquals(probs.getInt(4 * src), r.probs().getInt(4 * out));
            }
          }
          assertEquals(total, out);
        }
      }
    }
  }
}
