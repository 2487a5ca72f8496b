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
import ai.rapids.cudf.Scalar;
import ai.rapids.cudf.Table;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.DeviceBuffer;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.api.PermuteSpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
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

  /** One output row of the ROWS layout, read back from the output tables after the permute. */
  record OutRow(
      int rank,
      long batch,
      int row,
      int expert,
      int local,
      long token,
      int slot,
      Float prob,
      byte[] hidden) {}

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
      try (RandomBatch in = RandomBatch.create(rnd, n, h, k, e, d, 0.2);
          ColumnVector ids = longs(n, 1000, 7);
          ColumnVector hidden =
              lists(in.tokens, n, (long) h * d.bytes(), ai.rapids.cudf.DType.UINT8);
          ColumnVector routing = lists(in.routing, n, k, ai.rapids.cudf.DType.INT32);
          ColumnVector probs = lists(in.probs, n, k, ai.rapids.cudf.DType.FLOAT32)) {
        for (PermuteSpec spec : specs) {
          long rowBytes = spec.rowBytes();
          long max = forceSplit ? rowBytes * 37 + 5 : CudfPermuter.CUDF_MAX_CHILD_BYTES;
          CudfPermuter p = new CudfPermuter(h, d, k, max);
          for (int r = 0; r < ranks; r++) {
            boolean withProbs = r % 2 == 0;
            PermuteOptions o = spec.optionsForRank(r);
            String at = d + " n=" + n + " h=" + h + " k=" + k + " rank " + r + " " + o.capacity();
            List<Table> out =
                p.permute(
                    new CudfPermuter.BatchColumns(
                        ids, hidden, routing, withProbs ? probs : null, 0, n),
                    o,
                    r,
                    42,
                    spec.expertPlacement().expertsOf(r));
            try (PermuteResult exp = CPU.permute(in.input(withProbs), o)) {
              long[] tokenIds = new long[n];
              for (int t = 0; t < n; t++) {
                tokenIds[t] = 1000 + 7L * t;
              }
              checkTables(at, out, exp, tokenIds, r, 42, spec, max);
            } finally {
              out.forEach(Table::close);
            }
          }
        }
      }
      assertEquals(before, DeviceBuffer.liveBuffers(), "plan scratch leaked");
    }
  }

  /** N = 0 with padding, K = 1, H = 1, a rank without any routed slot. */
  static void awkwardShapes() {
    PermuteSpec padded =
        PermuteSpec.builder(4, 2).hidden(1, DType.F32).topK(1).perExpertCapacity(3, true).build();
    CudfPermuter p = new CudfPermuter(1, DType.F32, 1, CudfPermuter.CUDF_MAX_CHILD_BYTES);
    // no token at all: the padding rows still come, zero
    try (ColumnVector ids = longs(0, 0, 1);
        HostBuffer none = HostBuffer.allocate(0);
        ColumnVector hidden = lists(none, 0, 4, ai.rapids.cudf.DType.UINT8);
        ColumnVector routing = lists(none, 0, 1, ai.rapids.cudf.DType.INT32)) {
      List<Table> out =
          p.permute(
              new CudfPermuter.BatchColumns(ids, hidden, routing, null, 0, 0),
              padded.optionsForRank(1),
              1,
              0,
              padded.expertPlacement().expertsOf(1));
      try (PermuteResult exp =
          CPU.permute(
              new PermuteInput(none, 0, 1, DType.F32, none, 1, null), padded.optionsForRank(1))) {
        assertEquals(6, exp.numOut());
        checkTables("N=0 padded", out, exp, new long[0], 1, 0, padded, Long.MAX_VALUE);
      } finally {
        out.forEach(Table::close);
      }
    }
    // every token routed to rank 0: rank 1 gets nothing without padding
    PermuteSpec plain = PermuteSpec.builder(4, 2).hidden(1, DType.F32).topK(1).build();
    try (HostBuffer tok = HostBuffer.allocate(4 * 5);
        HostBuffer rt = HostBuffer.allocate(4 * 5)) {
      for (int t = 0; t < 5; t++) {
        tok.putFloat(4L * t, t + 0.5f);
        rt.putInt(4L * t, t % 2);
      }
      try (ColumnVector ids = longs(5, 10, 1);
          ColumnVector hidden = lists(tok, 5, 4, ai.rapids.cudf.DType.UINT8);
          ColumnVector routing = lists(rt, 5, 1, ai.rapids.cudf.DType.INT32)) {
        for (int r = 0; r < 2; r++) {
          List<Table> out =
              p.permute(
                  new CudfPermuter.BatchColumns(ids, hidden, routing, null, 0, 5),
                  plain.optionsForRank(r),
                  r,
                  3,
                  plain.expertPlacement().expertsOf(r));
          try (PermuteResult exp =
              CPU.permute(
                  new PermuteInput(tok, 5, 1, DType.F32, rt, 1, null), plain.optionsForRank(r))) {
            checkTables(
                "K=1 H=1 rank " + r,
                out,
                exp,
                new long[] {10, 11, 12, 13, 14},
                r,
                3,
                plain,
                Long.MAX_VALUE);
            assertEquals(r == 0 ? 5 : 0, exp.numOut());
          } finally {
            out.forEach(Table::close);
          }
        }
      }
    }
  }

  /**
   * A rank partition as RAPIDS hands it over: several DISPATCH tables, batches spanning them,
   * markers first in each batch, a batch of markers only; every batch equals the CPU backend.
   */
  static void rankBatchesMatchCpu() {
    SplittableRandom rnd = Seeds.fresh("cudf rank batches");
    int h = 33;
    int k = 3;
    DType d = DType.BF16;
    PermuteSpec spec =
        PermuteSpec.builder(8, 2).hidden(h, d).topK(k).perExpertCapacity(40, true).build();
    int rank = 1;
    long rowBytes = spec.rowBytes();
    int[] sizes = {150, 0, 61, 230}; // batch 1 has markers only
    List<Object[]> rows = new ArrayList<>(); // batch, token, hidden, ids, probs (null: marker)
    List<RandomBatch> inputs = new ArrayList<>();
    try {
      for (int b = 0; b < sizes.length; b++) {
        rows.add(new Object[] {(long) b, -1L, new byte[0], new int[0], null});
        rows.add(new Object[] {(long) b, -1L, new byte[0], new int[0], null});
        RandomBatch in = RandomBatch.create(rnd, sizes[b], h, k, 8, d, 0.3);
        inputs.add(in);
        // mask to the rank, as the map side does
        for (int t = 0; t < sizes[b]; t++) {
          for (int j = 0; j < k; j++) {
            int id = in.routing.getInt(4L * (t * k + j));
            if (id >= 0 && spec.expertPlacement().rankOf(id) != rank) {
              in.routing.putInt(4L * (t * k + j), -1);
            }
          }
        }
        for (int t = 0; t < sizes[b]; t++) {
          byte[] hid = new byte[(int) rowBytes];
          for (int x = 0; x < rowBytes; x++) {
            hid[x] = in.tokens.getByte(t * rowBytes + x);
          }
          int[] ids = new int[k];
          float[] pr = new float[k];
          for (int j = 0; j < k; j++) {
            ids[j] = in.routing.getInt(4L * (t * k + j));
            pr[j] = in.probs.getFloat(4L * (t * k + j));
          }
          rows.add(new Object[] {(long) b, 5L + 3L * t, hid, ids, pr});
        }
      }
      // cut into tables at awkward places: inside batch 0, right after batch 1's markers, ...
      int[] cuts = {0, 97, 153, 154, 300, rows.size()};
      List<Table> tables = new ArrayList<>();
      for (int c = 0; c + 1 < cuts.length; c++) {
        tables.add(dispatchTable(rows.subList(cuts[c], cuts[c + 1]), rank));
      }
      Iterator<Table> it = tables.iterator();
      List<Table> out = new ArrayList<>();
      try (CudfRankBatches batches = new CudfRankBatches(it, spec, true, rowBytes * 50)) {
        batches.forEachRemaining(out::add);
        assertEquals(sizes.length, batches.batches());
      }
      try {
        int next = 0;
        for (int b = 0; b < sizes.length; b++) {
          RandomBatch in = inputs.get(b);
          try (PermuteResult exp = CPU.permute(in.input(true), spec.optionsForRank(rank))) {
            List<Table> mine = new ArrayList<>();
            long rowsSeen = 0;
            while (rowsSeen < exp.numOut()) {
              Table t = out.get(next++);
              mine.add(t);
              rowsSeen += t.getRowCount();
            }
            long[] tokenIds = new long[sizes[b]];
            for (int t = 0; t < sizes[b]; t++) {
              tokenIds[t] = 5L + 3L * t;
            }
            checkTables("batch " + b, mine, exp, tokenIds, rank, b, spec, rowBytes * 50);
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

  /** A table of Schemas.DISPATCH columns from (batch, token, hidden, ids, probs) rows. */
  private static Table dispatchTable(List<Object[]> rows, int rank) {
    int n = rows.size();
    int[] ranks = new int[n];
    int[] pkeys = new int[n];
    long[] batches = new long[n];
    long[] tokens = new long[n];
    List<List<Byte>> hidden = new ArrayList<>();
    List<List<Integer>> ids = new ArrayList<>();
    List<List<Float>> probs = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      Object[] r = rows.get(i);
      ranks[i] = rank;
      pkeys[i] = 7;
      batches[i] = (Long) r[0];
      tokens[i] = (Long) r[1];
      List<Byte> hb = new ArrayList<>();
      for (byte x : (byte[]) r[2]) {
        hb.add(x);
      }
      hidden.add(hb);
      List<Integer> ib = new ArrayList<>();
      for (int x : (int[]) r[3]) {
        ib.add(x);
      }
      ids.add(ib);
      if (r[4] == null) {
        probs.add(null);
      } else {
        List<Float> pb = new ArrayList<>();
        for (float x : (float[]) r[4]) {
          pb.add(x);
        }
        probs.add(pb);
      }
    }
    try (ColumnVector c0 = ColumnVector.fromInts(ranks);
        ColumnVector c1 = ColumnVector.fromInts(pkeys);
        ColumnVector c2 = ColumnVector.fromLongs(batches);
        ColumnVector c3 = ColumnVector.fromLongs(tokens);
        ColumnVector c4 = fromLists(ai.rapids.cudf.DType.UINT8, hidden);
        ColumnVector c5 = fromLists(ai.rapids.cudf.DType.INT32, ids);
        ColumnVector c6 = fromLists(ai.rapids.cudf.DType.FLOAT32, probs)) {
      return new Table(c0, c1, c2, c3, c4, c5, c6);
    }
  }

  @SuppressWarnings({"unchecked", "rawtypes"})
  private static ColumnVector fromLists(ai.rapids.cudf.DType element, List<? extends List<?>> l) {
    HostColumnVector.DataType t =
        new HostColumnVector.ListType(true, new HostColumnVector.BasicType(false, element));
    return ColumnVector.fromLists(t, l.toArray(new List[0]));
  }

  /** INT64 {@code first, first + step, ...} on the device. */
  private static ColumnVector longs(int n, long first, long step) {
    try (Scalar a = Scalar.fromLong(first);
        Scalar s = Scalar.fromLong(step)) {
      return ColumnVector.sequence(a, s, n);
    }
  }

  /**
   * A LIST column of {@code n} rows of {@code perRow} elements, built on the device: the host
   * buffer's bytes become the child column (one upload), and the offsets a device sequence.
   */
  private static ColumnVector lists(
      HostBuffer src, int n, long perRow, ai.rapids.cudf.DType element) {
    long count = n * perRow;
    int size = element.getSizeInBytes();
    try (HostMemoryBuffer h = HostMemoryBuffer.allocate(Math.max(1, count * size))) {
      for (long i = 0; i < count * size; i++) {
        h.setByte(i, src.getByte(i));
      }
      ai.rapids.cudf.DeviceMemoryBuffer dev =
          ai.rapids.cudf.DeviceMemoryBuffer.allocate(Math.max(1, count * size));
      dev.copyFromHostBuffer(h);
      try (ColumnVector child =
              new ColumnVector(element, count, java.util.Optional.of(0L), dev, null, null);
          Scalar zero = Scalar.fromInt(0);
          Scalar step = Scalar.fromInt((int) perRow);
          ColumnVector offsets = ColumnVector.sequence(zero, step, n + 1)) {
        return child.makeListFromOffsets(n, offsets);
      }
    }
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
    long rowBytes = spec.rowBytes();
    int[] local = new int[spec.numExperts()];
    Arrays.fill(local, -1);
    int[] mine = spec.expertPlacement().expertsOf(rank);
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
