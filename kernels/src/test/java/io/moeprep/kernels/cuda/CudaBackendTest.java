package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The CUDA backend against the CPU backend, byte for byte, on fresh random cases over every dtype,
 * awkward widths and top-k, expert counts, -1 densities, capacity modes and rank masks.
 */
@Tag("gpu")
class CudaBackendTest extends GpuLeakCheck {
  private static final DType[] DTYPES = DType.values();
  // 64 and 776 make 16-byte rows for every dtype (the vectorised kernels)
  private static final int[] HIDDEN = {1, 3, 7, 64, 100, 776, 4097};
  private static final int[] TOP_K = {1, 2, 8, 129, 256};
  // 1000 is past the fused map kernel's limit (RoutingMapLauncher.FUSED_MAX_EXPERTS)
  private static final int[] EXPERTS = {1, 7, 256, 1000};
  private static final double[] DENSITY = {0.0, 0.1, 0.5, 0.9, 1.0};

  private final MoeKernels cpu = MoeKernels.on(CpuBackend.INSTANCE);

  private static MoeKernels gpu() {
    return gpu(KernelTuning.DEFAULT);
  }

  /** The CUDA backend on device 0 with {@code tuning}, passed down (no system property). */
  static MoeKernels gpu(KernelTuning tuning) {
    MoeKernels k = MoeKernels.on(CudaSupport.backend(0, tuning));
    assertEquals("cuda", k.backend().name(), "the GPU path must run");
    return k;
  }

  /** The shipped tuning with other fused-map settings. */
  static KernelTuning tuning(boolean fusedMap, long minBlockSlots, long taggedCells) {
    KernelTuning d = KernelTuning.DEFAULT;
    return new KernelTuning(
        d.cpuThreads(), fusedMap, minBlockSlots, taggedCells, d.syncLaunches(), d.failLaunch());
  }

  @Test
  void randomPermuteAndUnpermuteMatchCpu() {
    randomCases("CudaBackendTest.randomPermuteAndUnpermuteMatchCpu", gpu());
  }

  /** The same with the maps built by the three unfused kernels. */
  @Test
  void randomCasesWithoutTheFusedMapKernel() {
    KernelTuning d = KernelTuning.DEFAULT;
    randomCases(
        "CudaBackendTest.randomCasesWithoutTheFusedMapKernel",
        gpu(tuning(false, d.fusedMinBlockSlots(), d.fusedTaggedCells())));
  }

  /**
   * The same with the fused kernel's two-barrier path (each expert's prefix over the blocks by one
   * warp) on grids of many small blocks, as large batches take it.
   */
  @Test
  void randomCasesWithTheFusedKernelsTwoBarrierPath() {
    randomCases(
        "CudaBackendTest.randomCasesWithTheFusedKernelsTwoBarrierPath", gpu(tuning(true, 256, 0)));
  }

  /**
   * The fused kernel's tagged table (small grids, no barrier) over expert counts whose table rows
   * take every shape of its reduction (1 to 256 groups of 4 experts per row, padded rows) and grids
   * of 2 to about fifty blocks (the last one without slots); then again with that path taken by
   * every grid, so that threads load their rows in several batches.
   */
  @Test
  void fusedMapOverExpertCounts() {
    SplittableRandom rnd = Seeds.fresh("CudaBackendTest.fusedMapOverExpertCounts");
    int cases = 0;
    KernelTuning d = KernelTuning.DEFAULT;
    for (String cells : new String[] {null, Integer.toString(1 << 24)}) {
      MoeKernels gpu =
          gpu(
              tuning(
                  true,
                  d.fusedMinBlockSlots(),
                  cells == null ? d.fusedTaggedCells() : Long.parseLong(cells)));
      {
        for (int e : new int[] {3, 5, 9, 17, 33, 100, 129, 511, 768}) {
          for (int k : new int[] {1, 8}) {
            for (int rep = 0; rep < 3; rep++) {
              long n = rnd.nextLong(3001);
              double density = DENSITY[rnd.nextInt(DENSITY.length)];
              String label = "E=" + e + " cells " + cells + " case " + cases;
              runCase(gpu, rnd, n, 8, k, e, DType.BF16, density, cases % 8, label);
              cases++;
            }
          }
        }
      }
    }
  }

  private void randomCases(String name, MoeKernels gpu) {
    SplittableRandom rnd = Seeds.fresh(name);
    int cases = 0;
    for (DType d : DTYPES) {
      for (int h : HIDDEN) {
        for (int k : TOP_K) {
          for (int e : EXPERTS) {
            long budget = 4L << 20; // output bytes per case
            long maxN = Math.max(1, budget / ((long) k * h * d.bytes()));
            long n = rnd.nextLong(Math.min(maxN, 300) + 1);
            double density = DENSITY[rnd.nextInt(DENSITY.length)];
            int mode = cases % 8;
            runCase(gpu, rnd, n, h, k, e, d, density, mode, "case " + cases);
            cases++;
          }
        }
      }
    }
    System.out.println("compared " + cases + " random cases");
  }

  @Test
  void everyCapacityModeOnOneShape() {
    SplittableRandom rnd = Seeds.fresh("CudaBackendTest.everyCapacityModeOnOneShape");
    MoeKernels gpu = gpu();
    for (int mode = 0; mode < 8; mode++) {
      for (double density : DENSITY) {
        runCase(gpu, rnd, 517, 33, 8, 7, DType.BF16, density, mode, "mode " + mode);
      }
    }
  }

  /** Unpermute on 16-byte BF16 rows (the vectorised kernel) over top-k and -1 densities. */
  @Test
  void unpermuteOn16ByteRowsMatchesCpu() {
    SplittableRandom rnd = Seeds.fresh("CudaBackendTest.unpermuteOn16ByteRowsMatchesCpu");
    MoeKernels gpu = gpu();
    for (int k : new int[] {1, 3, 8}) {
      for (double density : new double[] {0.0, 0.5, 0.9}) {
        runCase(gpu, rnd, 300, 776, k, 16, DType.BF16, density, 0, "K=" + k);
      }
    }
  }

  @Test
  void emptyAndAllMaskedBatches() {
    SplittableRandom rnd = Seeds.fresh("CudaBackendTest.emptyAndAllMaskedBatches");
    MoeKernels gpu = gpu();
    for (DType d : new DType[] {DType.F32, DType.BF16, DType.F16}) {
      // N = 0, with and without extra numOut rows
      runCase(gpu, rnd, 0, 5, 3, 4, d, 0.0, 0, "N=0");
      runCase(gpu, rnd, 0, 5, 3, 4, d, 0.0, 2, "N=0 numOut");
      // every slot -1
      runCase(gpu, rnd, 100, 9, 4, 8, d, 1.0, 0, "all -1");
      runCase(gpu, rnd, 100, 9, 4, 8, d, 1.0, 4, "all -1 padded");
    }
  }

  @Test
  void rankWithoutRoutedSlots() {
    MoeKernels gpu = gpu();
    long n = 64;
    int k = 2;
    int h = 5;
    try (HostBuffer tokens = HostBuffer.allocate(n * h * 2);
        HostBuffer routing = HostBuffer.allocate(n * k * 4)) {
      RandomBatch.fillRandom(new SplittableRandom(1), tokens);
      for (long s = 0; s < n * k; s++) {
        routing.putInt(4 * s, (int) (s % 4)); // experts 0..3 only: rank 0 of 2
      }
      PermuteInput in = new PermuteInput(tokens, n, h, DType.BF16, routing, k, null);
      PermuteOptions rank1 = PermuteOptions.forRank(8, 2, 1);
      try (PermuteResult a = cpu.permute(in, rank1);
          PermuteResult b = gpu.permute(in, rank1)) {
        assertEquals(0, b.numOut());
        assertSame(a, b, "rank without slots");
      }
      PermuteOptions padded = rank1.withCapacity(CapacityPolicy.perExpert(3, true));
      try (PermuteResult a = cpu.permute(in, padded);
          PermuteResult b = gpu.permute(in, padded)) {
        assertEquals(12, b.numOut());
        assertSame(a, b, "rank without slots, padded");
      }
    }
  }

  @Test
  void seedCaseOfTheContract() {
    MoeKernels gpu = gpu();
    int[] ids = {0, -1, -1, 2, -1, 2, 1, 1, 3, -1, 3, -1, -1, 1, -1, -1};
    long n = 8;
    int h = 3;
    try (HostBuffer tokens = HostBuffer.allocate(n * h * 4);
        HostBuffer routing = HostBuffer.allocate(ids.length * 4L)) {
      for (int t = 0; t < n; t++) {
        for (int i = 0; i < h; i++) {
          tokens.putFloat(4L * (t * h + i), t * 10 + i);
        }
      }
      for (int i = 0; i < ids.length; i++) {
        routing.putInt(4L * i, ids[i]);
      }
      PermuteInput in = new PermuteInput(tokens, n, h, DType.F32, routing, 2, null);
      try (PermuteResult r = gpu.permute(in, PermuteOptions.of(4))) {
        long[] expect = {0, 3, 3, 6, 1, 2, 4, 5};
        assertEquals(expect.length, r.numOut());
        for (int i = 0; i < expect.length; i++) {
          assertEquals(expect[i], r.sourceToken().getLong(8L * i), "source of row " + i);
          assertEquals(expect[i] * 10f, r.permuted().getFloat(4L * i * h), "row " + i);
        }
      }
    }
  }

  @Test
  void chunkSortMatchesCpu() {
    SplittableRandom rnd = Seeds.fresh("CudaBackendTest.chunkSortMatchesCpu");
    MoeKernels gpu = gpu();
    for (int c = 0; c < 60; c++) {
      DType d = DTYPES[c % DTYPES.length];
      int h = HIDDEN[rnd.nextInt(HIDDEN.length)];
      int chunks = rnd.nextInt(20);
      long[] sizes = new long[chunks];
      long rows = 0;
      for (int i = 0; i < chunks; i++) {
        sizes[i] = rnd.nextInt(4) == 0 ? 0 : rnd.nextInt(h > 1000 ? 8 : 60);
        rows += sizes[i];
      }
      int[] order = new int[chunks];
      for (int i = 0; i < chunks; i++) {
        order[i] = i;
      }
      for (int i = chunks - 1; i > 0; i--) {
        int j = rnd.nextInt(i + 1);
        int x = order[i];
        order[i] = order[j];
        order[j] = x;
      }
      boolean withProbs = rnd.nextBoolean();
      try (HostBuffer data = HostBuffer.allocate(rows * h * d.bytes());
          HostBuffer probs = HostBuffer.allocate(rows * 4)) {
        RandomBatch.fillRandom(rnd, data);
        RandomBatch.fillRandom(rnd, probs);
        ChunkSortInput in =
            new ChunkSortInput(data, rows, h, d, sizes, order, withProbs ? probs : null);
        try (ChunkSortResult a = cpu.chunkSort(in);
            ChunkSortResult b = gpu.chunkSort(in)) {
          assertBytes(a.rows(), b.rows(), "chunk sort rows, case " + c);
          if (withProbs) {
            assertBytes(a.probs(), b.probs(), "chunk sort probs, case " + c);
          } else {
            assertNull(b.probs());
          }
        }
      }
    }
  }

  /**
   * Mode: 0 none, 1 numOut below the valid count, 2 numOut above it, 3 per-expert capacity, 4
   * per-expert padded, 5 alignment, 6 capacity + alignment, 7 padded + alignment. Every case is
   * masked to a random rank half of the time.
   */
  private void runCase(
      MoeKernels gpu,
      SplittableRandom rnd,
      long n,
      int h,
      int k,
      int e,
      DType d,
      double density,
      int mode,
      String label) {
    try (RandomBatch b = RandomBatch.create(rnd, n, h, k, e, d, density)) {
      PermuteOptions o = PermuteOptions.of(e);
      if (rnd.nextBoolean()) {
        int ranks = e % 8 == 0 ? 8 : e; // 1 -> 1, 7 -> 7, 256 -> 8
        o =
            new PermuteOptions(
                e,
                ExpertPlacement.contiguous(e, ranks),
                rnd.nextInt(ranks),
                CapacityPolicy.NONE,
                1);
      }
      long valid = validLocal(b, o);
      int align = new int[] {2, 3, 8, 16}[rnd.nextInt(4)];
      long cap = rnd.nextLong(Math.max(1, 2 * valid / Math.max(1, e)) + 2);
      o =
          switch (mode) {
            case 1 -> o.withCapacity(CapacityPolicy.numOut(valid / 2));
            case 2 -> o.withCapacity(CapacityPolicy.numOut(valid + 1 + rnd.nextInt(50)));
            case 3 -> o.withCapacity(CapacityPolicy.perExpert(cap, false));
            case 4 -> o.withCapacity(CapacityPolicy.perExpert(cap, true));
            case 5 -> o.withAlign(align);
            case 6 -> o.withCapacity(CapacityPolicy.perExpert(cap, false)).withAlign(align);
            case 7 -> o.withCapacity(CapacityPolicy.perExpert(cap, true)).withAlign(align);
            default -> o;
          };
      String what =
          label
              + " (N="
              + n
              + ", H="
              + h
              + ", K="
              + k
              + ", E="
              + e
              + ", "
              + d
              + ", density="
              + density
              + ", mode="
              + mode
              + ", rank="
              + o.rank()
              + ")";
      boolean withProbs = rnd.nextBoolean();
      PermuteInput in = b.input(withProbs);
      try (PermuteResult a = cpu.permute(in, o);
          PermuteResult g = gpu.permute(in, o)) {
        assertSame(a, g, what);
        if (d.isFp8()) {
          return;
        }
        // combine random expert outputs (NaNs and subnormals included) through the row map
        try (HostBuffer expertOut = HostBuffer.allocate(a.numOut() * h * d.bytes())) {
          RandomBatch.fillRandom(rnd, expertOut);
          for (boolean p : new boolean[] {false, true}) {
            UnpermuteInput u =
                new UnpermuteInput(
                    expertOut, a.numOut(), a.rowIdMap(), n, k, h, d, p ? b.probs : null);
            try (HostBuffer x = cpu.unpermute(u);
                HostBuffer y = gpu.unpermute(u)) {
              assertBytes(x, y, "unpermute, probs=" + p + ", " + what);
            }
          }
        }
      }
    }
  }

  private static long validLocal(RandomBatch b, PermuteOptions o) {
    boolean[] local = o.localExperts();
    long v = 0;
    for (long s = 0; s < b.numTokens * b.topK; s++) {
      int id = b.routing.getInt(4 * s);
      if (id >= 0 && local[id]) {
        v++;
      }
    }
    return v;
  }

  static void assertSame(PermuteResult a, PermuteResult b, String what) {
    assertEquals(a.numOut(), b.numOut(), "numOut, " + what);
    assertArrayEquals(a.layout().keptPerExpert(), b.layout().keptPerExpert(), "kept, " + what);
    assertArrayEquals(
        a.layout().droppedPerExpert(), b.layout().droppedPerExpert(), "dropped, " + what);
    assertArrayEquals(a.layout().offsets(), b.layout().offsets(), "offsets, " + what);
    assertBytes(a.rowIdMap(), b.rowIdMap(), "rowIdMap, " + what);
    assertBytes(a.sourceToken(), b.sourceToken(), "sourceToken, " + what);
    assertBytes(a.sourceSlot(), b.sourceSlot(), "sourceSlot, " + what);
    assertBytes(a.permuted(), b.permuted(), "permuted, " + what);
    if (a.permutedProbs() == null) {
      assertNull(b.permutedProbs(), "permutedProbs, " + what);
    } else {
      assertBytes(a.permutedProbs(), b.permutedProbs(), "permutedProbs, " + what);
    }
  }

  static void assertBytes(HostBuffer a, HostBuffer b, String what) {
    assertEquals(a.size(), b.size(), "size of " + what);
    if (a.size() == 0 || a.contentEquals(0, b, 0, a.size())) {
      return;
    }
    long i = 0;
    while (a.getByte(i) == b.getByte(i)) {
      i++;
    }
    assertTrue(
        false,
        what
            + ": first difference at byte "
            + i
            + ": cpu "
            + Integer.toHexString(a.getByte(i) & 0xFF)
            + " gpu "
            + Integer.toHexString(b.getByte(i) & 0xFF));
  }
}
