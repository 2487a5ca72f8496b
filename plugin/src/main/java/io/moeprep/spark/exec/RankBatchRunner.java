package io.moeprep.spark.exec;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.DispatchChunk;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.ProblemShape;
import io.moeprep.spark.spec.RankMasks;
import io.moeprep.spark.spec.RunSettings;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.util.TaskCompletionListener;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The reduce side of dispatch. Under {@link Partitioning#RANK} a partition is one EP rank's {@link
 * DispatchChunk}s, sorted by batch; under {@link Partitioning#BATCH} it holds whole batches bound
 * for every rank ({@link DispatchChunk#ALL_RANKS}), sorted by batch. For each batch in turn it
 * builds host buffers (tokens, routing, probs) in token-id order, runs the permute kernel masked to
 * each rank the batch is for, one rank after the other, and emits the requested output lazily from
 * the kernel's result, so a task holds one batch and one result at a time.
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
   * @param counters where the data outputs ({@code ROWS}, {@code PACKED}, {@code SHARDS}) count
   *     their batches, or null
   */
  public RankBatchRunner(
      PermuteSpec spec, RankOutput output, boolean hasProbs, BatchCounters counters) {
    this.spec = spec;
    this.output = output;
    this.hasProbs = hasProbs;
    this.counters =
        output == RankOutput.ROWS || output == RankOutput.PACKED || output == RankOutput.SHARDS
            ? counters
            : null;
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
    }
    return it;
  }

  /** The outputs of one permuted (rank, batch), produced one row at a time. */
  private final class BatchOutput {
    final int rank;
    final long batch;
    final long[] tokenIds;
    final int[] members; // the tokens the rank receives (indexes into tokenIds), null for all
    final PermuteResult result;
    final int[] localIndex;
    final int[] localExperts;
    final List<long[]> blocks = new ArrayList<>(); // PACKED: expert, part, from, to
    final long rowBytes = spec.shape().rowBytes();
    long cursor;
    final long count;

    BatchOutput(
        int rank,
        long batch,
        long[] tokenIds,
        int[] members,
        PermuteResult result,
        ExpertPlacement p) {
      this.rank = rank;
      this.batch = batch;
      this.tokenIds = tokenIds;
      this.members = members;
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
            case ROW_MAP -> members == null ? tokenIds.length : members.length;
            case TOKENS_PER_EXPERT -> localExperts.length;
            case SHARDS -> Math.max(1, (result.numOut() + rowsPerPart() - 1) / rowsPerPart());
          };
    }

    /** Rows per PACKED block or shard part: as many as {@code maxBlockBytes} holds, at least 1. */
    private long rowsPerPart() {
      long maxBlockBytes = spec.settings().maxBlockBytes();
      if (rowBytes > maxBlockBytes) {
        throw new IllegalArgumentException(
            "one hidden row has "
                + rowBytes
                + " bytes, more than spark.moeprep.packed.maxBlockBytes = "
                + maxBlockBytes);
      }
      return maxBlockBytes / rowBytes;
    }

    private long planBlocks() {
      SegmentLayout l = result.layout();
      long rowsPerPart = rowsPerPart();
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
        case SHARDS -> shard((int) i);
      };
    }

    private long token(long i) {
      long t = result.sourceToken().getLong(8 * i);
      return t < 0 ? -1 : tokenIds[(int) t];
    }

    private Row row(long i) {
      int expert = result.layout().expertOfRow(i);
      byte[] hidden = result.permuted().toBytes(i * rowBytes, rowBytes);
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
      byte[] hidden = result.permuted().toBytes(from * rowBytes, rows * rowBytes);
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

    private Row rowMap(int i) {
      int t = members == null ? i : members[i];
      int k = spec.shape().topK();
      int[] ids = new int[k];
      for (int j = 0; j < k; j++) {
        ids[j] = result.rowIdMap().getInt(4L * ((long) t * k + j));
      }
      return RowFactory.create(rank, batch, tokenIds[t], ids);
    }

    /**
     * Part {@code part} of the (rank, batch)'s shard ({@link ShardSchema#SHARDS}): its rows of the
     * permuted tensor and of the per-row tensors, and on part 0 the per-token and per-expert
     * tensors and the spec. {@code source_token} indexes {@code token_id}, the tokens this rank
     * received.
     */
    private Row shard(int part) {
      long rows = result.numOut();
      long perPart = rowsPerPart();
      int parts = (int) count;
      long from = part * perPart;
      long to = Math.min(rows, from + perPart);
      int n = (int) (to - from);
      byte[] sources = new byte[8 * n];
      int[] index = members == null ? null : memberIndex();
      for (int j = 0; j < n; j++) {
        long src = result.sourceToken().getLong(8 * (from + j));
        LONGS.set(sources, 8 * j, src < 0 || index == null ? src : index[(int) src]);
      }
      boolean first = part == 0;
      int k = spec.shape().topK();
      int tokens = members == null ? tokenIds.length : members.length;
      return RowFactory.create(
          rank,
          batch,
          part,
          parts,
          rows,
          (long) tokens,
          spec.shape().hidden(),
          k,
          spec.shape().numExperts(),
          spec.shape().dtype().cliName(),
          result.permuted().toBytes(from * rowBytes, n * rowBytes),
          sources,
          result.sourceSlot().toBytes(8 * from, 8L * n),
          result.permutedProbs() == null ? null : result.permutedProbs().toBytes(4 * from, 4L * n),
          first ? rowIdMapOfMembers(k) : null,
          first ? longs(result.tokensPerExpert()) : null,
          first ? longs(result.layout().offsets()) : null,
          first ? longs(memberIds()) : null,
          first ? CollectionConverters.asScala(shardMetadata()) : null);
    }

    /** For each token of the batch, its index among the rank's tokens ({@code -1}: not one). */
    private int[] memberIndex() {
      int[] index = new int[tokenIds.length];
      Arrays.fill(index, -1);
      for (int i = 0; i < members.length; i++) {
        index[members[i]] = i;
      }
      return index;
    }

    private long[] memberIds() {
      if (members == null) {
        return tokenIds;
      }
      long[] ids = new long[members.length];
      for (int i = 0; i < ids.length; i++) {
        ids[i] = tokenIds[members[i]];
      }
      return ids;
    }

    private byte[] rowIdMapOfMembers(int k) {
      if (members == null) {
        return result.rowIdMap().toBytes(0, result.rowIdMap().size());
      }
      long slots = 4L * k;
      byte[] out = new byte[Math.toIntExact(members.length * slots)];
      for (int i = 0; i < members.length; i++) {
        result.rowIdMap().copyTo(members[i] * slots, out, (int) (i * slots), slots);
      }
      return out;
    }

    private Map<String, String> shardMetadata() {
      ProblemShape shape = spec.shape();
      Map<String, String> m = new LinkedHashMap<>();
      m.put("ep_size", Integer.toString(shape.expertPlacement().numRanks()));
      m.put("capacity", shape.capacity().optionValue());
      m.put("align", Integer.toString(shape.align()));
      m.put("dispatch", spec.settings().dispatch().name().toLowerCase(Locale.ROOT));
      if (!shape.placement().isEmpty()) {
        m.put(
            "placement",
            shape.placement().stream().map(String::valueOf).collect(Collectors.joining(",")));
      }
      return m;
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

  /**
   * One batch's tokens in token-id order as kernel input, and the ranks still to permute it for:
   * the chunks' rank under {@link Partitioning#RANK}, every rank under {@link Partitioning#BATCH}.
   * The input is shared by the ranks; the kernels mask the routing to each.
   */
  private static final VarHandle LONGS =
      MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

  private static byte[] longs(long[] values) {
    byte[] a = new byte[Math.multiplyExact(8, values.length)];
    for (int i = 0; i < values.length; i++) {
      LONGS.set(a, 8 * i, values[i]);
    }
    return a;
  }

  private final class LoadedBatch implements AutoCloseable {
    final long batch;
    final long[] tokenIds;
    final PermuteInput input;
    final boolean allRanks;
    final int[] ranks;
    int nextRank;

    LoadedBatch(long batch, long[] tokenIds, PermuteInput input, boolean allRanks, int[] ranks) {
      this.batch = batch;
      this.tokenIds = tokenIds;
      this.input = input;
      this.allRanks = allRanks;
      this.ranks = ranks;
    }

    boolean hasNextRank() {
      return nextRank < ranks.length;
    }

    /** The permute of the next rank, with the tokens that rank receives. */
    BatchOutput permuteNext(MoeKernels kernels) {
      int rank = ranks[nextRank++];
      ProblemShape shape = spec.shape();
      String[] ranOn = {""};
      PermuteResult result =
          ExecutorRuntime.runBatch(
              kernels,
              spec.settings(),
              "rank " + rank + ", batch " + batch,
              backend -> backend.permute(input, shape.optionsForRank(rank)),
              b -> ranOn[0] = b);
      if (counters != null) {
        counters.batch(result.numOut(), result.numOut() * shape.rowBytes(), ranOn[0]);
      }
      ExecutorRuntime.countPermuted(result.numOut(), shape.rowBytes());
      return Closeables.closeOnExcept(
          result,
          r -> new BatchOutput(rank, batch, tokenIds, members(rank), r, shape.expertPlacement()));
    }

    /**
     * The tokens (indexes into {@link #tokenIds}) that {@code rank} receives, or null for all:
     * under ALL_TO_ALL, as the all-to-all sends them ({@link RankMasks}), those with an expert on
     * the rank, and on rank 0 those with no expert at all.
     */
    private int[] members(int rank) {
      if (!allRanks || spec.settings().dispatch() == Dispatch.ALL_GATHER) {
        return null;
      }
      ExpertPlacement placement = spec.shape().expertPlacement();
      int k = input.topK();
      int n = tokenIds.length;
      int[] m = new int[n];
      int count = 0;
      for (int t = 0; t < n; t++) {
        boolean any = false;
        boolean mine = false;
        for (int j = 0; j < k && !mine; j++) {
          int e = input.routing().getInt(4L * ((long) t * k + j));
          if (e >= 0) {
            any = true;
            mine = placement.rankOf(e) == rank;
          }
        }
        if (mine || (!any && rank == 0)) {
          m[count++] = t;
        }
      }
      return count == n ? null : Arrays.copyOf(m, count);
    }

    @Override
    public void close() {
      Closeables.closeAll(input.tokens(), input.routing(), input.probs());
    }
  }

  private final class RankIterator implements Iterator<Row> {
    private final BatchReader reader;
    private final MoeKernels kernels;
    private LoadedBatch loaded;
    private BatchOutput current;
    private int rank = -1;

    RankIterator(Iterator<Row> in) {
      RunSettings s = spec.settings();
      this.reader = new BatchReader(in, DispatchChunk.BATCH);
      this.kernels = ExecutorRuntime.kernels(s.backend(), s.tuning(), TaskContext.get());
    }

    @Override
    public boolean hasNext() {
      while (current == null || !current.hasNext()) {
        closeCurrentOutput();
        if (loaded != null && loaded.hasNextRank()) {
          current = loaded.permuteNext(kernels);
          continue;
        }
        closeLoaded();
        if (!reader.hasNext()) {
          return false;
        }
        loaded = load(reader.next());
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

    /** Frees the batch and the result in hand (at the end of the task, also a failed one). */
    void closeCurrent() {
      try {
        closeCurrentOutput();
      } finally {
        closeLoaded();
      }
    }

    private void closeCurrentOutput() {
      if (current != null) {
        current.result.close();
        current = null;
      }
    }

    private void closeLoaded() {
      if (loaded != null) {
        loaded.close();
        loaded = null;
      }
    }

    /** Reads a batch's chunks into kernel input, in token-id order. */
    private LoadedBatch load(List<Row> rows) {
      List<DispatchChunk> chunks = new ArrayList<>(rows.size());
      for (Row r : rows) {
        chunks.add(DispatchChunk.of(r));
      }
      rows.clear();
      DispatchChunk first = chunks.get(0);
      if (rank == -1) {
        rank = first.rank();
      }
      long batch = first.batch();
      ProblemShape shape = spec.shape();
      int k = shape.topK();
      long rowBytes = shape.rowBytes();
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
      int tokens = n;
      HostBuffer[] buffers = new HostBuffer[3]; // filled as allocated: closed on a failure
      return Closeables.closeOnExcept(
          () -> {
            buffers[0] = HostBuffer.allocate(tokens * rowBytes);
            buffers[1] = HostBuffer.allocate(4L * tokens * k);
            buffers[2] = hasProbs ? HostBuffer.allocate(4L * tokens * k) : null;
            for (int t = 0; t < tokens; t++) {
              int src = order.source(t);
              chunks
                  .get(chunkOf[src])
                  .copyToken(indexIn[src], k, rowBytes, buffers[0], buffers[1], buffers[2], t);
            }
            chunks.clear();
            PermuteInput input =
                new PermuteInput(
                    buffers[0], tokens, shape.hidden(), shape.dtype(), buffers[1], k, buffers[2]);
            boolean allRanks = rank == DispatchChunk.ALL_RANKS;
            int[] ranks =
                allRanks
                    ? IntStream.range(0, shape.expertPlacement().numRanks()).toArray()
                    : new int[] {rank};
            return new LoadedBatch(batch, order.sortedIds(), input, allRanks, ranks);
          },
          buffers);
    }
  }
}
