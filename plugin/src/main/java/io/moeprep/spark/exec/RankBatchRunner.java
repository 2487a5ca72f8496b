package io.moeprep.spark.exec;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.spec.DispatchChunk;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.ProblemShape;
import io.moeprep.spark.spec.RunSettings;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.util.TaskCompletionListener;

/**
 * The reduce side of dispatch: one partition is one EP rank's {@link DispatchChunk}s, sorted by
 * batch. For each batch in turn it builds host buffers (tokens, routing, probs) in token-id order,
 * runs the permute kernel masked to the rank, and emits the requested output lazily from the
 * kernel's result, so a task holds one batch and its result at a time.
 */
public final class RankBatchRunner implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final RankOutput output;
  private final boolean hasProbs;
  private final BatchCounters counters;

  /**
   * @param hasProbs whether the input has probs (then every output carries them, 0 on padding)
   */
  public RankBatchRunner(PermuteSpec spec, RankOutput output, boolean hasProbs) {
    this(spec, output, hasProbs, null);
  }

  /**
   * @param hasProbs whether the input has probs (then every output carries them, 0 on padding)
   * @param counters where the data outputs ({@code ROWS}, {@code PACKED}) count their batches, or
   *     null
   */
  public RankBatchRunner(
      PermuteSpec spec, RankOutput output, boolean hasProbs, BatchCounters counters) {
    this.spec = spec;
    this.output = output;
    this.hasProbs = hasProbs;
    this.counters = output == RankOutput.ROWS || output == RankOutput.PACKED ? counters : null;
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    if (!in.hasNext()) {
      return Collections.emptyIterator();
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
    final long rowBytes = spec.shape().rowBytes();
    long cursor;
    final long count;

    BatchOutput(int rank, long batch, long[] tokenIds, PermuteResult result, ExpertPlacement p) {
      this.rank = rank;
      this.batch = batch;
      this.tokenIds = tokenIds;
      this.result = result;
      this.localExperts = p.expertsOf(rank);
      this.localIndex = new int[p.numExperts()];
      Arrays.fill(localIndex, -1);
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
      long maxBlockBytes = spec.settings().maxBlockBytes();
      long rowsPerPart = Math.max(1, maxBlockBytes / rowBytes);
      if (rowBytes > maxBlockBytes) {
        throw new IllegalArgumentException(
            "one hidden row has "
                + rowBytes
                + " bytes, more than spark.moeprep.packed.maxBlockBytes = "
                + maxBlockBytes);
      }
      for (int x = 0; x < l.numSegments(); x++) {
        long to = l.segmentEnd(x);
        int part = 0;
        for (long s = l.segmentStart(x); s < to; s += rowsPerPart) {
          blocks.add(new long[] {l.segmentExpert(x), part++, s, Math.min(to, s + rowsPerPart)});
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

    private long token(long i) {
      long t = result.sourceToken().getLong(8 * i);
      return t < 0 ? -1 : tokenIds[(int) t];
    }

    private Row row(long i) {
      int expert = result.layout().expertOfRow(i);
      byte[] hidden = new byte[(int) rowBytes];
      result.permuted().copyTo(i * rowBytes, hidden, 0, rowBytes);
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
      byte[] hidden = new byte[Math.toIntExact(rows * rowBytes)];
      result.permuted().copyTo(from * rowBytes, hidden, 0, hidden.length);
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
      int k = spec.shape().topK();
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
  }

  private final class RankIterator implements Iterator<Row> {
    private final BatchReader reader;
    private final MoeKernels kernels;
    private BatchOutput current;
    private int rank = -1;

    RankIterator(Iterator<Row> in) {
      RunSettings s = spec.settings();
      this.reader = new BatchReader(in, DispatchChunk.BATCH);
      this.kernels = ExecutorRuntime.kernels(s.backend(), s.tuning());
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

    private BatchOutput permute(List<Row> rows) {
      List<DispatchChunk> chunks = new ArrayList<>(rows.size());
      for (Row r : rows) {
        chunks.add(DispatchChunk.of(r));
      }
      rows.clear();
      DispatchChunk first = chunks.get(0);
      if (rank < 0) {
        rank = first.rank();
      }
      long batch = first.batch();
      ProblemShape shape = spec.shape();
      int k = shape.topK();
      long rowBytes = shape.rowBytes();
      // the batch's tokens, from all its chunks, in token-id order
      int n = 0;
      for (DispatchChunk c : chunks) {
        if (c.rank() != rank) {
          throw new IllegalStateException(
              "partition holds ranks " + rank + " and " + c.rank() + ": expected one");
        }
        n = Math.addExact(n, c.numTokens());
      }
      long[] arrived = new long[n];
      int[] chunkOf = new int[n];
      int[] indexIn = new int[n];
      int at = 0;
      for (int ci = 0; ci < chunks.size(); ci++) {
        DispatchChunk c = chunks.get(ci);
        for (int i = 0; i < c.numTokens(); i++, at++) {
          arrived[at] = c.tokenId(i);
          chunkOf[at] = ci;
          indexIn[at] = i;
        }
      }
      TokenOrder order = TokenOrder.of(arrived, batch);
      try (HostBuffer tokens = HostBuffer.allocate(n * rowBytes);
          HostBuffer routing = HostBuffer.allocate(4L * n * k);
          HostBuffer probs = hasProbs ? HostBuffer.allocate(4L * n * k) : null) {
        for (int t = 0; t < n; t++) {
          int s = order.source(t);
          chunks.get(chunkOf[s]).copyToken(indexIn[s], k, rowBytes, tokens, routing, probs, t);
        }
        chunks.clear();
        PermuteInput input =
            new PermuteInput(tokens, n, shape.hidden(), shape.dtype(), routing, k, probs);
        String[] ranOn = {""};
        PermuteResult result =
            ExecutorRuntime.runBatch(
                kernels,
                spec.settings(),
                "rank " + rank + ", batch " + batch,
                backend -> backend.permute(input, shape.optionsForRank(rank)),
                b -> ranOn[0] = b);
        if (counters != null) {
          counters.batch(result.numOut(), result.numOut() * rowBytes, ranOn[0]);
        }
        ExecutorRuntime.ROWS_PERMUTED.inc(result.numOut());
        ExecutorRuntime.BYTES_PERMUTED.inc(result.numOut() * rowBytes);
        return Closeables.closeOnExcept(
            result,
            r -> new BatchOutput(rank, batch, order.sortedIds(), r, shape.expertPlacement()));
      }
    }
  }
}
