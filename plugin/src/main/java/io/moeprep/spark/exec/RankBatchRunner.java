package io.moeprep.spark.exec;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.api.PermuteSpec;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.util.TaskCompletionListener;
import sun.misc.Unsafe;

/**
 * The reduce side of dispatch: one partition is one EP rank, sorted by (batch, token_id). For each
 * batch in turn it builds host buffers (tokens, routing, probs), runs the permute kernel masked to
 * the rank, and emits the requested output lazily from the kernel's result, so a task holds one
 * batch and its result at a time.
 */
public final class RankBatchRunner implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;
  private static final Unsafe U = HostBuffer.unsafe();

  // fields of Schemas.DISPATCH
  private static final int RANK = 0;
  private static final int BATCH = 2;
  private static final int N = 3;
  private static final int TOKENS = 4;
  private static final int IDS = 5;
  private static final int PROBS = 6;
  private static final int HIDDEN = 7;

  private final PermuteSpec spec;
  private final RankOutput output;
  private final boolean hasProbs;

  /**
   * @param hasProbs whether the input has probs (then every output carries them, 0 on padding)
   */
  public RankBatchRunner(PermuteSpec spec, RankOutput output, boolean hasProbs) {
    this.spec = spec;
    this.output = output;
    this.hasProbs = hasProbs;
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    if (!in.hasNext()) {
      return java.util.Collections.emptyIterator();
    }
    RankIterator it = new RankIterator(in);
    TaskContext ctx = TaskContext.get();
    if (ctx != null) {
      ctx.addTaskCompletionListener((TaskCompletionListener) c -> it.closeCurrent());
      ExecutorRuntime.noteTaskDevice(ctx);
    }
    return it;
  }

  /** The outputs of one permuted (rank, batch), produced one row at a time. */
  private final class BatchOutput {
    final int rank;
    final long batch;
    final long[] tokenIds;
    final PermuteResult result;
    final int[] localIndex;
    final int[] localExperts;
    final List<long[]> blocks = new ArrayList<>(); // PACKED: expert, part, from, to
    long cursor;
    final long count;

    BatchOutput(int rank, long batch, long[] tokenIds, PermuteResult result, ExpertPlacement p) {
      this.rank = rank;
      this.batch = batch;
      this.tokenIds = tokenIds;
      this.result = result;
      this.localExperts = p.expertsOf(rank);
      this.localIndex = new int[p.numExperts()];
      java.util.Arrays.fill(localIndex, -1);
      for (int i = 0; i < localExperts.length; i++) {
        localIndex[localExperts[i]] = i;
      }
      this.count =
          switch (output) {
            case ROWS -> result.numOut();
            case PACKED -> planBlocks();
            case ROW_MAP -> tokenIds.length;
            case TOKENS_PER_EXPERT -> localExperts.length;
          };
    }

    private long planBlocks() {
      SegmentLayout l = result.layout();
      long rowsPerPart = Math.max(1, spec.maxBlockBytes() / spec.rowBytes());
      if (spec.rowBytes() > spec.maxBlockBytes()) {
        throw new IllegalArgumentException(
            "one hidden row has "
                + spec.rowBytes()
                + " bytes, more than spark.moeprep.packed.maxBlockBytes = "
                + spec.maxBlockBytes());
      }
      int e = l.numExperts();
      for (int x = 0; x <= e; x++) {
        long from = l.offset(Math.min(x, e));
        long to = x < e ? l.offset(x + 1) : l.numOut(); // x == E: numOut's zero tail
        int part = 0;
        for (long s = from; s < to; s += rowsPerPart) {
          blocks.add(new long[] {x < e ? x : -1, part++, s, Math.min(to, s + rowsPerPart)});
        }
      }
      return blocks.size();
    }

    boolean hasNext() {
      return cursor < count;
    }

    Row next() {
      long i = cursor++;
      return switch (output) {
        case ROWS -> row(i);
        case PACKED -> block(blocks.get((int) i));
        case ROW_MAP -> rowMap((int) i);
        case TOKENS_PER_EXPERT -> tokensPerExpert(localExperts[(int) i]);
      };
    }

    private int expertOfRow(long i) {
      SegmentLayout l = result.layout();
      int lo = 0;
      int hi = l.numExperts(); // find e with offset(e) <= i < offset(e+1)
      if (i >= l.offset(hi)) {
        return -1;
      }
      while (hi - lo > 1) {
        int mid = (lo + hi) >>> 1;
        if (l.offset(mid) <= i) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      while (lo + 1 < l.numExperts() && l.offset(lo + 1) <= i) {
        lo++;
      }
      return lo;
    }

    private long token(long i) {
      long t = result.sourceToken().getLong(8 * i);
      return t < 0 ? -1 : tokenIds[(int) t];
    }

    private Row row(long i) {
      int expert = expertOfRow(i);
      byte[] hidden = new byte[(int) spec.rowBytes()];
      copyOut(i, 1, hidden);
      Float prob = result.permutedProbs() == null ? null : result.permutedProbs().getFloat(4 * i);
      return RowFactory.create(
          rank,
          batch,
          (int) i,
          expert,
          expert < 0 ? -1 : localIndex[expert],
          token(i),
          (int) result.sourceSlot().getLong(8 * i),
          prob,
          hidden);
    }

    private Row block(long[] b) {
      int expert = (int) b[0];
      long from = b[2];
      int rows = (int) (b[3] - from);
      long[] tokens = new long[rows];
      int[] slots = new int[rows];
      float[] probs = result.permutedProbs() == null ? null : new float[rows];
      for (int j = 0; j < rows; j++) {
        tokens[j] = token(from + j);
        slots[j] = (int) result.sourceSlot().getLong(8 * (from + j));
        if (probs != null) {
          probs[j] = result.permutedProbs().getFloat(4 * (from + j));
        }
      }
      byte[] hidden = new byte[Math.toIntExact(rows * spec.rowBytes())];
      copyOut(from, rows, hidden);
      return RowFactory.create(
          rank,
          batch,
          expert,
          expert < 0 ? -1 : localIndex[expert],
          (int) b[1],
          from,
          rows,
          tokens,
          slots,
          probs,
          hidden);
    }

    private Row rowMap(int t) {
      int k = spec.topK();
      int[] ids = new int[k];
      for (int j = 0; j < k; j++) {
        ids[j] = result.rowIdMap().getInt(4L * ((long) t * k + j));
      }
      return RowFactory.create(rank, batch, tokenIds[t], ids);
    }

    private Row tokensPerExpert(int e) {
      SegmentLayout l = result.layout();
      long[] dropped = l.droppedPerExpert();
      return RowFactory.create(
          rank,
          batch,
          e,
          localIndex[e],
          l.kept(e),
          dropped[e],
          l.offset(e),
          l.offset(e + 1) - l.offset(e));
    }

    private void copyOut(long row, int rows, byte[] dst) {
      long bytes = rows * spec.rowBytes();
      if (bytes > 0) {
        U.copyMemory(
            null,
            result.permuted().address() + row * spec.rowBytes(),
            dst,
            Unsafe.ARRAY_BYTE_BASE_OFFSET,
            bytes);
      }
    }
  }

  /** The order of {@code ids} by value (identity when already ascending). */
  private static int[] tokenOrder(long[] ids, boolean sorted) {
    int n = ids.length;
    if (sorted) {
      int[] id = new int[n];
      for (int i = 0; i < n; i++) {
        id[i] = i;
      }
      return id;
    }
    Integer[] boxed = new Integer[n];
    for (int i = 0; i < n; i++) {
      boxed[i] = i;
    }
    java.util.Arrays.sort(boxed, (a, b) -> Long.compare(ids[a], ids[b]));
    int[] out = new int[n];
    for (int i = 0; i < n; i++) {
      out[i] = boxed[i];
    }
    return out;
  }

  private final class RankIterator implements Iterator<Row> {
    private final BatchReader reader;
    private final MoeKernels kernels;
    private BatchOutput current;
    private int rank = -1;

    RankIterator(Iterator<Row> in) {
      this.reader = new BatchReader(in, BATCH);
      this.kernels = ExecutorRuntime.kernels(spec.backend());
    }

    @Override
    public boolean hasNext() {
      while (current == null || !current.hasNext()) {
        closeCurrent();
        if (!reader.hasNext()) {
          return false;
        }
        current = permute(reader.next());
      }
      return true;
    }

    @Override
    public Row next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      return current.next();
    }

    void closeCurrent() {
      if (current != null) {
        current.result.close();
        current = null;
      }
    }

    private BatchOutput permute(List<Row> chunks) {
      Row first = chunks.get(0);
      int r = first.getInt(RANK);
      if (rank < 0) {
        rank = r;
      }
      long batch = first.getLong(BATCH);
      int k = spec.topK();
      long rowBytes = spec.rowBytes();
      boolean withProbs = hasProbs;
      // the batch's tokens, from all its chunks, in token-id order
      int n = 0;
      for (Row c : chunks) {
        if (c.getInt(RANK) != rank) {
          throw new IllegalStateException(
              "partition holds ranks " + rank + " and " + c.getInt(RANK) + ": expected one");
        }
        n = Math.addExact(n, c.getInt(N));
      }
      long[] tokenIds = new long[n];
      int[] chunkOf = new int[n];
      int[] indexIn = new int[n];
      int at = 0;
      boolean sorted = true;
      for (int ci = 0; ci < chunks.size(); ci++) {
        byte[] ids = (byte[]) chunks.get(ci).get(TOKENS);
        for (int i = 0, m = chunks.get(ci).getInt(N); i < m; i++, at++) {
          tokenIds[at] = LittleEndian.getLong(ids, 8 * i);
          chunkOf[at] = ci;
          indexIn[at] = i;
          sorted &= at == 0 || tokenIds[at - 1] < tokenIds[at];
        }
      }
      int[] order = tokenOrder(tokenIds, sorted);
      long[] sortedIds = new long[n];
      for (int t = 0; t < n; t++) {
        sortedIds[t] = tokenIds[order[t]];
        if (t > 0 && sortedIds[t - 1] == sortedIds[t]) {
          throw new IllegalArgumentException(
              "token_id=" + sortedIds[t] + ": appears more than once in batch " + batch);
        }
      }
      tokenIds = sortedIds;
      try (HostBuffer tokens = HostBuffer.allocate(n * rowBytes);
          HostBuffer routing = HostBuffer.allocate(4L * n * k);
          HostBuffer probs = withProbs ? HostBuffer.allocate(4L * n * k) : null) {
        long tAddr = n == 0 ? 0 : tokens.address();
        long rAddr = n == 0 ? 0 : routing.address();
        long pAddr = n == 0 || probs == null ? 0 : probs.address();
        byte[][] hid = new byte[chunks.size()][];
        byte[][] ids = new byte[chunks.size()][];
        byte[][] prb = new byte[chunks.size()][];
        for (int ci = 0; ci < chunks.size(); ci++) {
          Row c = chunks.get(ci);
          hid[ci] = (byte[]) c.get(HIDDEN);
          ids[ci] = (byte[]) c.get(IDS);
          prb[ci] = c.isNullAt(PROBS) ? null : (byte[]) c.get(PROBS);
        }
        long base = Unsafe.ARRAY_BYTE_BASE_OFFSET;
        for (int t = 0; t < n; t++) {
          int ci = chunkOf[order[t]];
          long i = indexIn[order[t]];
          U.copyMemory(hid[ci], base + i * rowBytes, null, tAddr + t * rowBytes, rowBytes);
          U.copyMemory(ids[ci], base + 4 * i * k, null, rAddr + 4L * t * k, 4L * k);
          if (withProbs) {
            U.copyMemory(prb[ci], base + 4 * i * k, null, pAddr + 4L * t * k, 4L * k);
          }
        }
        chunks.clear();
        PermuteInput input =
            new PermuteInput(tokens, n, spec.hidden(), spec.dtype(), routing, k, probs);
        PermuteResult result =
            ExecutorRuntime.runBatch(
                kernels,
                spec,
                "rank " + rank + ", batch " + batch,
                backend -> backend.permute(input, spec.optionsForRank(rank)));
        ExecutorRuntime.ROWS_PERMUTED.inc(result.numOut());
        ExecutorRuntime.BYTES_PERMUTED.inc(result.numOut() * rowBytes);
        try {
          return new BatchOutput(rank, batch, tokenIds, result, spec.expertPlacement());
        } catch (RuntimeException e) {
          result.close();
          throw e;
        }
      }
    }
  }
}
