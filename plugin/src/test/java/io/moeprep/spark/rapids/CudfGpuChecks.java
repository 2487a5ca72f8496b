package io.moeprep.spark.rapids;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.rapids.cudf.BaseDeviceMemoryBuffer;
import ai.rapids.cudf.ColumnVector;
import ai.rapids.cudf.ColumnView;
import ai.rapids.cudf.Cuda;
import ai.rapids.cudf.HostColumnVector;
import ai.rapids.cudf.HostMemoryBuffer;
import ai.rapids.cudf.Table;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.DeviceBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.SplittableRandom;

/** The cudf side of {@link CudfPermuteGpuTest}; loaded only once a GPU and cudf are there. */
final class CudfGpuChecks {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  private CudfGpuChecks() {}

  /** Null when cudf loads and sees a device, else why not. */
  static String cudfUnavailable() {
    try {
      int n = Cuda.getDeviceCount();
      return n > 0 ? null : "cudf sees no CUDA device";
    } catch (Throwable t) {
      return "cudf-java (ai.rapids:cudf:26.08.1:cuda13) does not load: " + t;
    }
  }

  /** One output row of the ROWS layout (read back from cudf output tables or a DataFrame). */
  record OutRow(
      int rank,
      long batch,
      int row,
      int expert,
      int local,
      long token,
      int slot,
      Float prob,
      byte[] hidden) {
    /** Every field as text, the prob by its bits, the hidden bytes in hex. */
    String line() {
      return String.format(
          "%d %06d %06d %d %d %d %d %s %s",
          rank,
          batch,
          row,
          expert,
          local,
          token,
          slot,
          prob == null ? "null" : Integer.toHexString(Float.floatToRawIntBits(prob)),
          HexFormat.of().formatHex(hidden));
    }
  }

  /** One dispatched chunk: its tokens' ids, packed expert ids, probs (or null) and hidden rows. */
  record Chunk(int rank, long batch, long[] tokenIds, byte[] ids, byte[] probs, byte[] hidden) {}

  /**
   * Chunks of tokens {@code [0, n)} of a batch (token {@code t} has id {@code first + step * t}),
   * {@code parts} of them, the tokens in a random order across chunks when {@code shuffle}.
   */
  static List<Chunk> chunks(
      RandomBatch in,
      int rank,
      long batch,
      long first,
      long step,
      int parts,
      boolean shuffle,
      boolean withProbs,
      SplittableRandom rnd) {
    int n = (int) in.numTokens;
    int k = in.topK;
    long rowBytes = (long) in.hidden * in.dtype.bytes();
    int[] order = new int[n];
    for (int t = 0; t < n; t++) {
      order[t] = t;
    }
    if (shuffle) {
      for (int t = n - 1; t > 0; t--) {
        int j = rnd.nextInt(t + 1);
        int x = order[t];
        order[t] = order[j];
        order[j] = x;
      }
    }
    List<Chunk> out = new ArrayList<>();
    for (int c = 0; c < parts; c++) {
      int from = (int) ((long) n * c / parts);
      int to = (int) ((long) n * (c + 1) / parts);
      int m = to - from;
      long[] ids = new long[m];
      byte[] routing = new byte[4 * m * k];
      byte[] probs = withProbs ? new byte[4 * m * k] : null;
      byte[] hidden = new byte[(int) (m * rowBytes)];
      for (int i = 0; i < m; i++) {
        int t = order[from + i];
        ids[i] = first + step * t;
        for (int x = 0; x < 4 * k; x++) {
          routing[4 * i * k + x] = in.routing.getByte(4L * t * k + x);
          if (withProbs) {
            probs[4 * i * k + x] = in.probs.getByte(4L * t * k + x);
          }
        }
        for (int x = 0; x < rowBytes; x++) {
          hidden[(int) (i * rowBytes + x)] = in.tokens.getByte(t * rowBytes + x);
        }
      }
      out.add(new Chunk(rank, batch, ids, routing, probs, hidden));
    }
    return out;
  }

  /** Random batches on several ranks, capacity policies and dtypes: cudf route vs CPU backend. */
  static void permuterMatchesCpu(boolean forceSplit) {
    SplittableRandom rnd = Seeds.fresh("cudf permuter, split=" + forceSplit);
    int[][] shapes = {{1031, 129, 4, 16, 4}, {517, 64, 2, 8, 2}, {257, 3, 1, 4, 1}};
    DType[] dtypes = {DType.BF16, DType.F32, DType.FP8_E4M3};
    for (int s = 0; s < shapes.length; s++) {
      int n = shapes[s][0];
      int h = shapes[s][1];
      int k = shapes[s][2];
      int e = shapes[s][3];
      int ranks = shapes[s][4];
      DType d = dtypes[s];
      PermuteSpec.Builder b = PermuteSpec.builder(e, ranks).hidden(h, d).topK(k);
      PermuteSpec[] specs = {
        b.build(), b.perExpertCapacity(n / e + 3, true).build(), b.numOut(n * k / ranks).build()
      };
      long before = DeviceBuffer.liveBuffers();
      try (RandomBatch in = RandomBatch.create(rnd, n, h, k, e, d, 0.2)) {
        for (PermuteSpec spec : specs) {
          long max =
              forceSplit ? spec.shape().rowBytes() * 37 + 5 : CudfPermuter.CUDF_MAX_CHILD_BYTES;
          for (int r = 0; r < ranks; r++) {
            boolean withProbs = r % 2 == 0;
            boolean shuffle = s != 1 || r == 1; // in token order for some, shuffled for most
            PermuteOptions o = spec.shape().optionsForRank(r);
            String at = d + " n=" + n + " h=" + h + " k=" + k + " rank " + r + " " + o.capacity();
            List<Table> tables =
                List.of(table(chunks(in, r, 42, 1000, 7, 3, shuffle, withProbs, rnd)));
            List<Table> out = new ArrayList<>();
            try (CudfRankBatches batches =
                new CudfRankBatches(tables.iterator(), spec, withProbs, max)) {
              batches.forEachRemaining(out::add);
              assertEquals(1, batches.batches(), at + ": batches");
            }
            try (PermuteResult exp = CPU.permute(in.input(withProbs), o)) {
              checkTables(at, out, exp, ids(n, 1000, 7), r, 42, spec, max);
            } finally {
              out.forEach(Table::close);
            }
          }
        }
      }
      assertEquals(before, DeviceBuffer.liveBuffers(), "plan scratch leaked");
    }
  }

  /** N = 0 with padding (an empty chunk), K = 1, H = 1, a rank without any routed slot. */
  static void awkwardShapes() {
    SplittableRandom rnd = Seeds.fresh("cudf awkward shapes");
    PermuteSpec padded =
        PermuteSpec.builder(4, 2).hidden(1, DType.F32).topK(1).perExpertCapacity(3, true).build();
    try (RandomBatch none = RandomBatch.create(rnd, 0, 1, 1, 4, DType.F32, 0)) {
      List<Table> out = run(chunks(none, 1, 0, 0, 1, 1, false, true, rnd), padded, true);
      try (PermuteResult exp = CPU.permute(none.input(true), padded.shape().optionsForRank(1))) {
        assertEquals(6, exp.numOut());
        checkTables("N=0 padded", out, exp, new long[0], 1, 0, padded, Long.MAX_VALUE);
      } finally {
        out.forEach(Table::close);
      }
    }
    // every token routed to rank 0: rank 1 gets nothing without padding
    PermuteSpec plain = PermuteSpec.builder(4, 2).hidden(1, DType.F32).topK(1).build();
    try (RandomBatch five = RandomBatch.create(rnd, 5, 1, 1, 4, DType.F32, 0)) {
      for (int t = 0; t < 5; t++) {
        five.routing.putInt(4L * t, t % 2);
      }
      for (int r = 0; r < 2; r++) {
        List<Table> out = run(chunks(five, r, 3, 10, 1, 2, true, false, rnd), plain, false);
        try (PermuteResult exp = CPU.permute(five.input(false), plain.shape().optionsForRank(r))) {
          assertEquals(r == 0 ? 5 : 0, exp.numOut());
          checkTables("K=1 H=1 rank " + r, out, exp, ids(5, 10, 1), r, 3, plain, Long.MAX_VALUE);
        } finally {
          out.forEach(Table::close);
        }
      }
    }
  }

  /**
   * A rank partition as RAPIDS hands it over: several tables of chunks, batches spanning them, a
   * batch of one empty chunk; every batch equals the CPU backend.
   */
  static void rankBatchesMatchCpu() {
    SplittableRandom rnd = Seeds.fresh("cudf rank batches");
    int h = 33;
    int k = 3;
    DType d = DType.BF16;
    PermuteSpec spec =
        PermuteSpec.builder(8, 2).hidden(h, d).topK(k).perExpertCapacity(40, true).build();
    int rank = 1;
    long rowBytes = spec.shape().rowBytes();
    int[] sizes = {150, 0, 61, 230};
    int[] parts = {3, 1, 2, 3};
    List<RandomBatch> inputs = new ArrayList<>();
    List<Chunk> all = new ArrayList<>();
    try {
      for (int b = 0; b < sizes.length; b++) {
        RandomBatch in = RandomBatch.create(rnd, sizes[b], h, k, 8, d, 0.3);
        inputs.add(in);
        all.addAll(chunks(in, rank, b, 5, 3, parts[b], true, true, rnd));
      }
      // tables cut inside batch 0, after batch 1's only chunk, inside batch 3
      int[] cuts = {0, 2, 4, 6, all.size()};
      List<Table> tables = new ArrayList<>();
      for (int c = 0; c + 1 < cuts.length; c++) {
        tables.add(table(all.subList(cuts[c], cuts[c + 1])));
      }
      List<Table> out = new ArrayList<>();
      try (CudfRankBatches batches =
          new CudfRankBatches(tables.iterator(), spec, true, rowBytes * 50)) {
        batches.forEachRemaining(out::add);
        assertEquals(sizes.length, batches.batches());
      }
      try {
        int next = 0;
        for (int b = 0; b < sizes.length; b++) {
          try (PermuteResult exp =
              CPU.permute(inputs.get(b).input(true), spec.shape().optionsForRank(rank))) {
            List<Table> mine = new ArrayList<>();
            long rowsSeen = 0;
            while (rowsSeen < exp.numOut()) {
              Table t = out.get(next++);
              mine.add(t);
              rowsSeen += t.getRowCount();
            }
            checkTables("batch " + b, mine, exp, ids(sizes[b], 5, 3), rank, b, spec, rowBytes * 50);
          }
        }
        assertEquals(out.size(), next, "tables beyond the batches");
      } finally {
        out.forEach(Table::close);
      }
    } finally {
      inputs.forEach(RandomBatch::close);
    }
  }

  private static List<Table> run(List<Chunk> chunks, PermuteSpec spec, boolean withProbs) {
    List<Table> out = new ArrayList<>();
    try (CudfRankBatches batches =
        new CudfRankBatches(
            List.of(table(chunks)).iterator(),
            spec,
            withProbs,
            CudfPermuter.CUDF_MAX_CHILD_BYTES)) {
      batches.forEachRemaining(out::add);
    }
    return out;
  }

  private static long[] ids(int n, long first, long step) {
    long[] v = new long[n];
    for (int t = 0; t < n; t++) {
      v[t] = first + step * t;
    }
    return v;
  }

  /** A table of Schemas.DISPATCH columns, built on the device, one row per chunk. */
  static Table table(List<Chunk> chunks) {
    int n = chunks.size();
    int[] ranks = new int[n];
    int[] pkeys = new int[n];
    long[] batches = new long[n];
    int[] counts = new int[n];
    byte[][] tokens = new byte[n][];
    byte[][] ids = new byte[n][];
    byte[][] probs = new byte[n][];
    byte[][] hidden = new byte[n][];
    boolean anyProbs = false;
    for (int i = 0; i < n; i++) {
      Chunk c = chunks.get(i);
      ranks[i] = c.rank();
      pkeys[i] = 7;
      batches[i] = c.batch();
      counts[i] = c.tokenIds().length;
      tokens[i] = new byte[8 * counts[i]];
      for (int t = 0; t < counts[i]; t++) {
        for (int x = 0; x < 8; x++) {
          tokens[i][8 * t + x] = (byte) (c.tokenIds()[t] >>> (8 * x));
        }
      }
      ids[i] = c.ids();
      probs[i] = c.probs();
      anyProbs |= c.probs() != null;
      hidden[i] = c.hidden();
    }
    try (ColumnVector c0 = ColumnVector.fromInts(ranks);
        ColumnVector c1 = ColumnVector.fromInts(pkeys);
        ColumnVector c2 = ColumnVector.fromLongs(batches);
        ColumnVector c3 = ColumnVector.fromInts(counts);
        ColumnVector c4 = binary(tokens);
        ColumnVector c5 = binary(ids);
        ColumnVector c6 = anyProbs ? binary(probs) : nullBinary(n);
        ColumnVector c7 = binary(hidden)) {
      return new Table(c0, c1, c2, c3, c4, c5, c6, c7);
    }
  }

  /**
   * A BINARY (LIST&lt;UINT8&gt;) column built on the device: the rows' bytes uploaded once as the
   * child, the offsets their running lengths.
   */
  private static ColumnVector binary(byte[][] rows) {
    int n = rows.length;
    int[] offsets = new int[n + 1];
    for (int i = 0; i < n; i++) {
      offsets[i + 1] = offsets[i] + rows[i].length;
    }
    long bytes = offsets[n];
    ai.rapids.cudf.DeviceMemoryBuffer dev =
        ai.rapids.cudf.DeviceMemoryBuffer.allocate(Math.max(1, bytes));
    try (HostMemoryBuffer h = HostMemoryBuffer.allocate(Math.max(1, bytes))) {
      for (int i = 0; i < n; i++) {
        h.setBytes(offsets[i], rows[i], 0, rows[i].length);
      }
      dev.copyFromHostBuffer(h);
    } catch (RuntimeException | Error e) {
      dev.close();
      throw e;
    }
    try (ColumnVector child =
            new ColumnVector(
                ai.rapids.cudf.DType.UINT8, bytes, java.util.Optional.of(0L), dev, null, null);
        ColumnVector off = ColumnVector.fromInts(offsets)) {
      return child.makeListFromOffsets(n, off);
    }
  }

  @SuppressWarnings("unchecked")
  private static ColumnVector nullBinary(int n) {
    HostColumnVector.DataType t =
        new HostColumnVector.ListType(
            true, new HostColumnVector.BasicType(false, ai.rapids.cudf.DType.UINT8));
    List<Byte>[] nulls = new List[n];
    return ColumnVector.<Byte>fromLists(t, nulls);
  }

  /**
   * The output tables equal the CPU result: every column of every row, the hidden bytes exactly;
   * pieces below the limit; the hidden columns of consecutive pieces are consecutive slices of one
   * device buffer (the kernel's output, never copied).
   */
  private static void checkTables(
      String at,
      List<Table> tables,
      PermuteResult exp,
      long[] tokenIds,
      int rank,
      long batch,
      PermuteSpec spec,
      long maxPieceBytes) {
    long rowBytes = spec.shape().rowBytes();
    int[] local = new int[spec.shape().numExperts()];
    Arrays.fill(local, -1);
    int[] mine = spec.shape().expertPlacement().expertsOf(rank);
    for (int i = 0; i < mine.length; i++) {
      local[mine[i]] = i;
    }
    List<OutRow> rows = new ArrayList<>();
    long nextAddress = -1;
    for (Table t : tables) {
      assertEquals(CudfPermuter.COLUMNS.size(), t.getNumberOfColumns(), at);
      long n = t.getRowCount();
      assertTrue(n * rowBytes <= maxPieceBytes, at + ": a piece of " + n + " rows is too big");
      long address = readTable(t, rows, rowBytes);
      if (nextAddress >= 0) {
        assertEquals(nextAddress, address, at + ": pieces are slices of one device buffer");
      }
      nextAddress = address + n * rowBytes;
    }
    if (maxPieceBytes < Long.MAX_VALUE) {
      long per = maxPieceBytes / rowBytes;
      assertEquals((exp.numOut() + per - 1) / per, tables.size(), at + ": pieces");
    }
    assertEquals(exp.numOut(), rows.size(), at + ": output rows");
    SegmentLayout l = exp.layout();
    for (int i = 0; i < rows.size(); i++) {
      OutRow r = rows.get(i);
      String w = at + " row " + i;
      int expert = -1;
      for (int e = 0; e < l.numExperts(); e++) {
        if (l.offset(e) <= i && i < l.offset(e + 1)) {
          expert = e;
        }
      }
      long src = exp.sourceToken().getLong(8L * i);
      assertEquals(rank, r.rank(), w);
      assertEquals(batch, r.batch(), w);
      assertEquals(i, r.row(), w);
      assertEquals(expert, r.expert(), w + " expert");
      assertEquals(expert < 0 ? -1 : local[expert], r.local(), w + " local_expert");
      assertEquals(src < 0 ? -1 : tokenIds[(int) src], r.token(), w + " token_id");
      assertEquals(exp.sourceSlot().getLong(8L * i), r.slot(), w + " slot");
      if (exp.permutedProbs() == null) {
        assertEquals(null, r.prob(), w + " prob is null without probs");
      } else {
        assertEquals(
            Float.floatToRawIntBits(exp.permutedProbs().getFloat(4L * i)),
            Float.floatToRawIntBits(r.prob()),
            w + " prob");
      }
      byte[] want = new byte[(int) rowBytes];
      for (int x = 0; x < rowBytes; x++) {
        want[x] = exp.permuted().getByte(i * rowBytes + x);
      }
      assertArrayEquals(want, r.hidden(), w + " hidden");
    }
  }

  /** A table's rows (copied to the host) as {@link OutRow#line} text. */
  static List<String> lines(Table t, long rowBytes) {
    List<OutRow> rows = new ArrayList<>();
    readTable(t, rows, rowBytes);
    List<String> out = new ArrayList<>();
    for (OutRow r : rows) {
      out.add(r.line());
    }
    return out;
  }

  /** Appends a table's rows; returns the device address of its hidden child data. */
  private static long readTable(Table t, List<OutRow> out, long rowBytes) {
    int n = (int) t.getRowCount();
    long address;
    byte[] hidden = new byte[(int) (n * rowBytes)];
    try (ColumnView child = t.getColumn(CudfPermuter.HIDDEN_COLUMN).getChildColumnView(0);
        BaseDeviceMemoryBuffer data = child.getData()) {
      address = data == null ? 0 : data.getAddress();
      if (n > 0) {
        try (HostMemoryBuffer h = HostMemoryBuffer.allocate(hidden.length)) {
          h.copyFromDeviceBuffer(data);
          h.getBytes(hidden, 0, 0, hidden.length);
        }
      }
    }
    try (HostColumnVector rank = t.getColumn(0).copyToHost();
        HostColumnVector batch = t.getColumn(1).copyToHost();
        HostColumnVector row = t.getColumn(2).copyToHost();
        HostColumnVector expert = t.getColumn(3).copyToHost();
        HostColumnVector local = t.getColumn(4).copyToHost();
        HostColumnVector token = t.getColumn(5).copyToHost();
        HostColumnVector slot = t.getColumn(6).copyToHost();
        HostColumnVector prob = t.getColumn(7).copyToHost();
        HostColumnVector offsets = listOffsets(t.getColumn(CudfPermuter.HIDDEN_COLUMN), n)) {
      for (int i = 0; i < n; i++) {
        assertEquals(i * rowBytes, offsets.getInt(i), "hidden offsets");
        out.add(
            new OutRow(
                rank.getInt(i),
                batch.getLong(i),
                row.getInt(i),
                expert.getInt(i),
                local.getInt(i),
                token.getLong(i),
                slot.getInt(i),
                prob.isNull(i) ? null : prob.getFloat(i),
                Arrays.copyOfRange(hidden, (int) (i * rowBytes), (int) ((i + 1) * rowBytes))));
      }
    }
    return address;
  }

  private static HostColumnVector listOffsets(ColumnVector list, int n) {
    try (BaseDeviceMemoryBuffer off = list.getOffsets();
        ColumnView v =
            new ColumnView(
                ai.rapids.cudf.DType.INT32,
                n + 1,
                java.util.Optional.of(0L),
                off,
                (BaseDeviceMemoryBuffer) null)) {
      return v.copyToHost();
    }
  }
}
