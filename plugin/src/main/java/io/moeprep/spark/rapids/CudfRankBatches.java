package io.moeprep.spark.rapids;

import ai.rapids.cudf.ColumnVector;
import ai.rapids.cudf.ColumnView;
import ai.rapids.cudf.HostColumnVector;
import ai.rapids.cudf.Table;
import io.moeprep.spark.api.PermuteSpec;
import java.util.ArrayDeque;
import java.util.Iterator;
import java.util.NoSuchElementException;

/**
 * The cudf side of one rank partition: consumes the partition's cudf tables (the dispatched records
 * in the columns of {@code Schemas.DISPATCH}: {@code ep_rank, pkey, batch, token_id, hidden,
 * expert_ids, probs}, sorted by batch then token id, as {@code ColumnarRdd} hands them over), cuts
 * them into batches, and permutes each batch on the GPU with {@link CudfPermuter}, producing the
 * output tables lazily, one batch at a time.
 *
 * <p>RAPIDS sizes the incoming tables by bytes, not by batch, so a batch can span tables: the rows
 * of the last, possibly unfinished batch of a table are carried (copied on the device) into the
 * next. Batch markers ({@code token_id = -1}, empty lists) come first in their batch and are
 * skipped; a batch of markers only still runs (it may have padding rows). Owns and closes every
 * input table. No Spark type appears here, so the GPU test runs it without Spark.
 */
public final class CudfRankBatches implements Iterator<Table>, AutoCloseable {
  static final int RANK = 0;
  static final int BATCH = 2;
  static final int TOKEN = 3;
  static final int HIDDEN = 4;
  static final int IDS = 5;
  static final int PROBS = 6;

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
    this.in = in;
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.permuter = new CudfPermuter(spec.hidden(), spec.dtype(), spec.topK(), maxPieceBytes);
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

  /** Closes the carried rows and any output not taken (on task failure). */
  @Override
  public void close() {
    if (carry != null) {
      carry.close();
      carry = null;
    }
    while (!ready.isEmpty()) {
      ready.poll().close();
    }
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
      long[] batch = longs(t.getColumn(BATCH));
      long[] token = longs(t.getColumn(TOKEN));
      int[] ranks = ints(t.getColumn(RANK));
      if (hasProbs) {
        long markers = java.util.Arrays.stream(token).filter(x -> x < 0).count();
        if (t.getColumn(PROBS).getNullCount() != markers) {
          throw new IllegalArgumentException(
              "probs is null for some tokens while others have probs (a batch has all or none)");
        }
      }
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
        runBatch(t, batch[s], token, ranks, s, e);
        s = e;
      }
      if (!last) {
        carry = slice(t, lastStart, n);
      }
    }
  }

  private void runBatch(Table t, long b, long[] token, int[] ranks, int s, int e) {
    int first = s;
    while (first < e && token[first] < 0) {
      first++; // batch markers sort first
    }
    for (int i = s; i < e; i++) {
      if (rank < 0) {
        rank = ranks[i];
      } else if (ranks[i] != rank) {
        throw new IllegalStateException(
            "partition holds ranks " + rank + " and " + ranks[i] + ": expected one");
      }
      if (i > first && token[i] <= token[i - 1]) {
        throw new IllegalArgumentException(
            "token_id=" + token[i] + ": appears more than once in batch " + b);
      }
    }
    ColumnView probs = hasProbs ? t.getColumn(PROBS) : null;
    CudfPermuter.BatchColumns cols =
        new CudfPermuter.BatchColumns(
            t.getColumn(TOKEN), t.getColumn(HIDDEN), t.getColumn(IDS), probs, first, e);
    java.util.List<Table> out =
        permuter.permute(
            cols, spec.optionsForRank(rank), rank, b, spec.expertPlacement().expertsOf(rank));
    batches++;
    for (Table x : out) {
      rowsOut += x.getRowCount();
    }
    ready.addAll(out);
  }

  private static Table slice(Table t, int from, int to) {
    ColumnVector[] cols = new ColumnVector[t.getNumberOfColumns()];
    try {
      for (int i = 0; i < cols.length; i++) {
        cols[i] = t.getColumn(i).subVector(from, to);
      }
      return new Table(cols);
    } finally {
      for (ColumnVector c : cols) {
        if (c != null) {
          c.close();
        }
      }
    }
  }

  private static long[] longs(ColumnVector c) {
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
