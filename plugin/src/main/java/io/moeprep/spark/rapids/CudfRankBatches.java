package io.moeprep.spark.rapids;

import ai.rapids.cudf.BaseDeviceMemoryBuffer;
import ai.rapids.cudf.ColumnVector;
import ai.rapids.cudf.ColumnView;
import ai.rapids.cudf.DType;
import ai.rapids.cudf.HostColumnVector;
import ai.rapids.cudf.Table;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.spark.spec.DispatchChunk;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.ProblemShape;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;

/**
 * The cudf side of one rank partition: consumes the partition's cudf tables (the dispatched chunks
 * in the columns of {@link DispatchChunk}: {@code ep_rank, pkey, batch, n, token_ids, expert_ids,
 * probs, hidden}, the last four BINARY, i.e. cudf LIST&lt;UINT8&gt;, sorted by batch, as {@code
 * ColumnarRdd} hands them over), cuts them into batches, and permutes each batch on the GPU with
 * {@link CudfPermuter}, producing the output tables lazily, one batch at a time.
 *
 * <p>The chunks of a batch are consecutive rows, so each packed column's child data for the batch
 * is one contiguous device range: the kernels read it in place. RAPIDS sizes the incoming tables by
 * bytes, not by batch, so a batch can span tables: the rows of the last, possibly unfinished batch
 * of a table are carried (copied on the device) into the next. Owns and closes every input table.
 * No Spark type appears here (it reads {@link DispatchChunk}'s compile-time constants only), so the
 * GPU test runs it without Spark.
 */
public final class CudfRankBatches implements Iterator<Table>, AutoCloseable {
  private final Iterator<Table> in;
  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final CudfPermuter permuter;
  private final ArrayDeque<Table> ready = new ArrayDeque<>();
  private Table carry;
  private int rank = -1;
  private long batches;
  private long rowsOut;

  /**
   * @param in the partition's tables, each closed here once used
   * @param maxPieceBytes most hidden bytes per output table ({@link
   *     CudfPermuter#CUDF_MAX_CHILD_BYTES} in production)
   */
  public CudfRankBatches(
      Iterator<Table> in, PermuteSpec spec, boolean hasProbs, long maxPieceBytes) {
    this(in, spec, hasProbs, maxPieceBytes, -1);
  }

  /**
   * @param in the partition's tables, each closed here once used
   * @param maxPieceBytes most hidden bytes per output table
   * @param taskDevice the GPU Spark assigned the task, or {@code -1}
   */
  public CudfRankBatches(
      Iterator<Table> in, PermuteSpec spec, boolean hasProbs, long maxPieceBytes, int taskDevice) {
    this.in = in;
    this.spec = spec;
    this.hasProbs = hasProbs;
    ProblemShape s = spec.shape();
    this.permuter =
        new CudfPermuter(
            s.hidden(),
            s.dtype(),
            s.topK(),
            maxPieceBytes,
            spec.settings().tuning().kernelTuning(),
            taskDevice);
  }

  /** Batches permuted so far. */
  public long batches() {
    return batches;
  }

  /** Output rows produced so far, padding included. */
  public long rowsOut() {
    return rowsOut;
  }

  @Override
  public boolean hasNext() {
    while (ready.isEmpty()) {
      if (in.hasNext()) {
        consume(in.next(), false);
      } else if (carry != null) {
        Table last = carry;
        carry = null;
        consume(last, true);
      } else {
        return false;
      }
    }
    return true;
  }

  @Override
  public Table next() {
    if (!hasNext()) {
      throw new NoSuchElementException();
    }
    return ready.poll();
  }

  /** Closes the carried rows and any output not taken (on task failure), every one tried. */
  @Override
  public void close() {
    List<AutoCloseable> left = new ArrayList<>(ready);
    left.add(0, carry);
    left.add(permuter);
    carry = null;
    ready.clear();
    Closeables.closeAll(left.toArray(new AutoCloseable[0]));
  }

  /**
   * Permutes every finished batch of {@code carry + next}; keeps the last batch as the new carry
   * unless {@code last}.
   */
  private void consume(Table next, boolean last) {
    Table cur;
    if (carry != null) {
      try (Table c = carry) {
        carry = null;
        try (Table n = next) {
          cur = Table.concatenate(c, n);
        }
      }
    } else {
      cur = next;
    }
    try (Table t = cur) {
      int n = (int) t.getRowCount();
      if (n == 0) {
        return;
      }
      long[] batch = longs(t.getColumn(DispatchChunk.BATCH));
      int[] ranks = ints(t.getColumn(DispatchChunk.RANK));
      int[] tokens = ints(t.getColumn(DispatchChunk.N));
      int lastStart = n - 1;
      while (lastStart > 0 && batch[lastStart - 1] == batch[n - 1]) {
        lastStart--;
      }
      int end = last ? n : lastStart;
      int s = 0;
      while (s < end) {
        int e = s + 1;
        while (e < end && batch[e] == batch[s]) {
          e++;
        }
        runBatch(t, batch[s], ranks, tokens, s, e);
        s = e;
      }
      if (!last) {
        carry = slice(t, lastStart, n);
      }
    }
  }

  private void runBatch(Table t, long b, int[] ranks, int[] tokens, int s, int e) {
    long n = 0;
    for (int i = s; i < e; i++) {
      if (rank < 0) {
        rank = ranks[i];
      } else if (ranks[i] != rank) {
        throw new IllegalStateException(
            "partition holds ranks " + rank + " and " + ranks[i] + ": expected one");
      }
      n += tokens[i];
    }
    if (n > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("batch " + b + " has " + n + " tokens: more than 2^31-1");
    }
    ProblemShape shape = spec.shape();
    long k = shape.topK();
    long tokenIds =
        packed(
            t.getColumn(DispatchChunk.TOKEN_IDS),
            tokens,
            s,
            e,
            DispatchChunk.TOKEN_ID_BYTES,
            "token_ids",
            b);
    long ids =
        packed(
            t.getColumn(DispatchChunk.EXPERT_IDS),
            tokens,
            s,
            e,
            DispatchChunk.EXPERT_ID_BYTES * k,
            "expert_ids",
            b);
    long probs =
        hasProbs
            ? packed(
                t.getColumn(DispatchChunk.PROBS),
                tokens,
                s,
                e,
                DispatchChunk.PROB_BYTES * k,
                "probs",
                b)
            : 0;
    long hidden =
        packed(t.getColumn(DispatchChunk.HIDDEN), tokens, s, e, shape.rowBytes(), "hidden", b);
    CudfPermuter.BatchBuffers buffers =
        new CudfPermuter.BatchBuffers(tokenIds, ids, probs, hidden, (int) n, hasProbs);
    List<Table> out =
        permuter.permute(
            buffers, shape.optionsForRank(rank), rank, b, shape.expertPlacement().expertsOf(rank));
    batches++;
    for (Table x : out) {
      rowsOut += x.getRowCount();
    }
    ready.addAll(out);
  }

  /**
   * The device address of the batch's packed array in a BINARY (LIST&lt;UINT8&gt;) column: the
   * child data of rows {@code [s, e)}, one contiguous range, after checking on the host that chunk
   * {@code i} holds exactly {@code tokens[i] * perToken} bytes. 0 when the batch has no token.
   */
  static long packed(
      ColumnView list, int[] tokens, int s, int e, long perToken, String name, long batch) {
    if (!list.getType().equals(DType.LIST)) {
      throw new IllegalArgumentException(
          "column " + name + " has cudf type " + list.getType() + ": must be LIST<UINT8> (binary)");
    }
    long first;
    long last;
    try (ColumnView child = list.getChildColumnView(0)) {
      DType ct = child.getType();
      if (!(ct.equals(DType.UINT8) || ct.equals(DType.INT8))) {
        throw new IllegalArgumentException(
            "column " + name + " has cudf type LIST<" + ct + ">: must be LIST<UINT8> (binary)");
      }
      int rows = e - s;
      try (BaseDeviceMemoryBuffer offsets = list.getOffsets()) {
        if (offsets == null) {
          return 0;
        }
        int[] off = HostCopies.ints(offsets.getAddress() + 4L * s, rows + 1);
        first = off[0];
        last = off[rows];
        for (int i = 0; i < rows; i++) {
          long len = (long) off[i + 1] - off[i];
          if (len != tokens[s + i] * perToken) {
            throw new IllegalArgumentException(
                "batch "
                    + batch
                    + ": a chunk of "
                    + tokens[s + i]
                    + " tokens has "
                    + len
                    + " bytes of "
                    + name
                    + ", expected "
                    + tokens[s + i] * perToken);
          }
        }
      }
      if (last == first) {
        return 0;
      }
      try (BaseDeviceMemoryBuffer data = child.getData()) {
        return data.getAddress() + first;
      }
    }
  }

  private static Table slice(Table t, int from, int to) {
    ColumnVector[] cols = new ColumnVector[t.getNumberOfColumns()];
    // the table holds its own references: ours go when it is made
    try (Closeables.Scope refs = new Closeables.Scope()) {
      for (int i = 0; i < cols.length; i++) {
        cols[i] = refs.own(t.getColumn(i).subVector(from, to));
      }
      return new Table(cols);
    }
  }

  /** The int64 values of a column, on the host. */
  static long[] longs(ColumnView c) {
    try (HostColumnVector h = c.copyToHost()) {
      long[] v = new long[(int) h.getRowCount()];
      for (int i = 0; i < v.length; i++) {
        v[i] = h.getLong(i);
      }
      return v;
    }
  }

  private static int[] ints(ColumnVector c) {
    try (HostColumnVector h = c.copyToHost()) {
      int[] v = new int[(int) h.getRowCount()];
      for (int i = 0; i < v.length; i++) {
        v[i] = h.getInt(i);
      }
      return v;
    }
  }
}
