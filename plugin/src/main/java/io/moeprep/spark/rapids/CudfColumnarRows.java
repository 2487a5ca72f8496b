package io.moeprep.spark.rapids;

import ai.rapids.cudf.BaseDeviceMemoryBuffer;
import ai.rapids.cudf.ColumnVector;
import ai.rapids.cudf.ColumnView;
import ai.rapids.cudf.DType;
import ai.rapids.cudf.HostColumnVector;
import ai.rapids.cudf.Table;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.ProblemShape;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.TaskContext;

/**
 * The columnar form of {@link PermuteRowsUdf}, called by RAPIDS with the device columns of a batch
 * of rows: {@code batch} INT64 and {@code tokens} LIST&lt;STRUCT&lt;token_id INT64, hidden
 * LIST&lt;UINT8&gt;, expert_ids LIST&lt;INT32&gt;, probs LIST&lt;FLOAT32&gt;&gt;&gt;, one row per
 * MoePrep batch. The tokens of a batch are consecutive in the struct's children, so its hidden
 * rows, routing and probs are each one contiguous device range (after checking every length on the
 * host from the list offsets): {@link CudfPermuter} permutes them in place for each rank. The
 * result, one list per input row, is the {@code ROWS} output of every rank of that batch as
 * LIST&lt;STRUCT&lt;{@link ColumnarPermute#ROW}&gt;&gt;. Only offsets, token ids and counts cross
 * to the host, never hidden rows.
 */
final class CudfColumnarRows {
  private CudfColumnarRows() {}

  /** Output hidden bytes one call may return: cudf's 32-bit list offsets. */
  static final long MAX_OUTPUT_BYTES = CudfPermuter.CUDF_MAX_CHILD_BYTES;

  static ColumnVector evaluate(PermuteRowsUdf udf, Object[] args) {
    ColumnVector batchCol = (ColumnVector) args[0];
    ColumnVector tokens = (ColumnVector) args[1];
    ProblemShape shape = udf.spec().shape();
    int k = shape.topK();
    long rowBytes = shape.rowBytes();
    int n = (int) batchCol.getRowCount();
    if (batchCol.getNullCount() > 0) {
      throw new IllegalArgumentException("batch is null in " + batchCol.getNullCount() + " rows");
    }
    long[] batches = CudfRankBatches.longs(batchCol);
    int ranks = shape.expertPlacement().numRanks();
    List<Table> outputs = new ArrayList<>();
    int[] listOffsets = new int[n + 1];
    try (Closeables.Scope owned = new Closeables.Scope();
        CudfPermuter permuter =
            new CudfPermuter(
                shape.hidden(),
                shape.dtype(),
                k,
                MAX_OUTPUT_BYTES,
                udf.spec().settings().tuning().kernelTuning(),
                ExecutorRuntime.taskDevice(TaskContext.get()))) {
      int[] tokenAt = n == 0 ? new int[1] : listOffsets(tokens, n + 1, owned);
      int total = tokenAt[n];
      ColumnView struct = owned.own(tokens.getChildColumnView(0));
      ColumnView ids = owned.own(struct.getChildColumnView(0));
      ColumnView hidden = owned.own(struct.getChildColumnView(1));
      ColumnView experts = owned.own(struct.getChildColumnView(2));
      ColumnView probs = owned.own(struct.getChildColumnView(3));
      long[] tokenIds = CudfRankBatches.longs(ids);
      Rows hid = Rows.of(hidden, total, rowBytes, 1, "hidden", tokenIds, owned);
      Rows exp = Rows.of(experts, total, k, 4, "expert_ids", tokenIds, owned);
      Rows pr = udf.hasProbs() ? Rows.of(probs, total, k, 4, "probs", tokenIds, owned) : null;
      long idsAt = total == 0 ? 0 : owned.own(ids.getData()).getAddress();
      long rowsOut = 0;
      for (int i = 0; i < n; i++) {
        long start = System.nanoTime();
        int a = tokenAt[i];
        CudfPermuter.BatchBuffers in =
            new CudfPermuter.BatchBuffers(
                idsAt + 8L * a,
                exp.at(a),
                pr == null ? 0 : pr.at(a),
                hid.at(a),
                tokenAt[i + 1] - a,
                udf.hasProbs(),
                java.util.Arrays.copyOfRange(tokenIds, a, tokenAt[i + 1]));
        for (int r = 0; r < ranks; r++) {
          long before = rowsOut;
          for (Table t :
              permuter.permute(
                  in,
                  shape.optionsForRank(r),
                  r,
                  batches[i],
                  shape.expertPlacement().expertsOf(r))) {
            outputs.add(t);
            rowsOut += t.getRowCount();
          }
          count(udf.counters(), rowsOut - before, rowBytes);
        }
        if (rowsOut * rowBytes > MAX_OUTPUT_BYTES) {
          throw new IllegalArgumentException(
              "the permuted rows of "
                  + (i + 1)
                  + " batches in one columnar batch hold "
                  + rowsOut * rowBytes
                  + " bytes, more than cudf's list limit of "
                  + MAX_OUTPUT_BYTES
                  + ": give the shuffle by batch more partitions"
                  + " (spark.moeprep.partitioning.batchPartitions) or lower"
                  + " spark.rapids.sql.batchSizeBytes");
        }
        listOffsets[i + 1] = (int) rowsOut;
        ExecutorRuntime.kernelTime(System.nanoTime() - start);
      }
      ColumnVector structs = owned.own(structOf(outputs, rowsOut));
      try (ColumnVector offsets = ColumnVector.fromInts(listOffsets)) {
        return structs.makeListFromOffsets(n, offsets);
      }
    } finally {
      Closeables.closeAll(outputs.toArray(new AutoCloseable[0]));
    }
  }

  private static void count(BatchCounters counters, long rows, long rowBytes) {
    ExecutorRuntime.countGpuPermuted(1, rows, rowBytes);
    if (counters != null) {
      counters.batch(rows, rows * rowBytes, "cuda");
    }
  }

  /** The output tables' rows as one STRUCT column of {@link ColumnarPermute#ROW}'s fields. */
  private static ColumnVector structOf(List<Table> tables, long rows) {
    if (tables.isEmpty()) {
      HostColumnVector.DataType i32 = new HostColumnVector.BasicType(false, DType.INT32);
      return ColumnVector.empty(
          new HostColumnVector.StructType(
              false,
              i32,
              i32,
              i32,
              i32,
              new HostColumnVector.BasicType(false, DType.INT64),
              i32,
              new HostColumnVector.BasicType(true, DType.FLOAT32),
              new HostColumnVector.ListType(
                  false, new HostColumnVector.BasicType(false, DType.UINT8))));
    }
    try (Table all = Table.concatenate(tables.toArray(new Table[0]))) {
      // every column of CudfPermuter.COLUMNS but batch (1)
      return ColumnVector.makeStruct(
          rows,
          all.getColumn(0),
          all.getColumn(2),
          all.getColumn(3),
          all.getColumn(4),
          all.getColumn(5),
          all.getColumn(6),
          all.getColumn(7),
          all.getColumn(CudfPermuter.HIDDEN_COLUMN));
    }
  }

  /**
   * A LIST column of fixed-length rows ({@code perRow} elements of {@code elemBytes}), checked on
   * the host: no null row, every row {@code perRow} long. Row {@code t}'s data is at {@link #at}.
   */
  private record Rows(long data, int[] offsets, int elemBytes) {
    static Rows of(
        ColumnView list,
        int total,
        long perRow,
        int elemBytes,
        String name,
        long[] tokenIds,
        Closeables.Scope owned) {
      if (list.getNullCount() > 0) {
        try (ColumnVector nulls = list.isNull();
            HostColumnVector h = nulls.copyToHost()) {
          for (int t = 0; t < total; t++) {
            if (h.getBoolean(t)) {
              throw new IllegalArgumentException(
                  "token_id=" + tokenIds[t] + ": " + name + " is null");
            }
          }
        }
      }
      int[] off = listOffsets(list, total + 1, owned);
      for (int t = 0; t < total; t++) {
        long len = (long) off[t + 1] - off[t];
        if (len != perRow) {
          throw new IllegalArgumentException(
              "token_id="
                  + tokenIds[t]
                  + ": "
                  + name
                  + " has "
                  + len
                  + (elemBytes == 1 ? " bytes" : " entries")
                  + ", expected "
                  + perRow);
        }
      }
      long data = 0;
      if (total > 0 && off[total] > off[0]) {
        try (ColumnView child = list.getChildColumnView(0)) {
          data = owned.own(child.getData()).getAddress();
        }
      }
      return new Rows(data, off, elemBytes);
    }

    long at(int t) {
      return data == 0 ? 0 : data + (long) elemBytes * offsets[t];
    }
  }

  /** The first {@code count} offsets of a LIST column, on the host (zeros when it has none). */
  private static int[] listOffsets(ColumnView list, int count, Closeables.Scope owned) {
    BaseDeviceMemoryBuffer buf = owned.own(list.getOffsets());
    return buf == null ? new int[count] : HostCopies.ints(buf.getAddress(), count);
  }
}
