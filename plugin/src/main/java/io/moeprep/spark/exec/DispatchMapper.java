package io.moeprep.spark.exec;

import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.spec.BadRowPolicy;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.DispatchChunk;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.ProblemShape;
import io.moeprep.spark.spec.RankMasks;
import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Set;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.util.LongAccumulator;

/**
 * The map side of dispatch: validates each token row and packs it into the chunk of each
 * destination (rank, batch) ({@link DispatchChunk}). Under ALL_TO_ALL the destinations are the
 * ranks owning at least one of the token's experts, and the routing is masked to each (the {@code
 * -1} sentinels are born here); a token with no valid slot goes to rank 0 so that it still has a
 * row-map entry. Under ALL_GATHER every rank gets the token unmasked.
 *
 * <p>Under {@link Partitioning#BATCH} there is one destination per batch: the chunks go, unmasked,
 * to {@link DispatchChunk#ALL_RANKS} with the key of partition {@code batch mod n} (consecutive
 * batches in distinct partitions, none sharing one while others stay empty), and the task that
 * holds the batch does the masking by permuting it for each rank.
 *
 * <p>A chunk is emitted when it holds {@code chunkBytes} of hidden data; when the open chunks of a
 * task hold 8 times that, all are emitted. After its last token, a task sends every rank an empty
 * chunk for each batch it saw and sent that rank nothing, so that every rank permutes every batch,
 * even one without any of its tokens: a padded layout (per-expert capacity with padding, numOut)
 * then has its zero rows on every rank, as on a single device.
 */
public final class DispatchMapper implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final boolean hasBatch;
  private final int[] partitionKeys;
  private final int chunkTokens;
  private final LongAccumulator badRowCount;
  private static final org.slf4j.Logger LOG =
      org.slf4j.LoggerFactory.getLogger(DispatchMapper.class);

  /**
   * @param partitionKeys per partition of the shuffle, a key that Spark's hash partitioning sends
   *     there (see {@link RankPartitioning}): one per rank, or under {@link Partitioning#BATCH} one
   *     per partition of batches
   */
  public DispatchMapper(PermuteSpec spec, boolean hasProbs, boolean hasBatch, int[] partitionKeys) {
    this(spec, hasProbs, hasBatch, partitionKeys, null);
  }

  /**
   * @param badRowCount counts the rows skipped under {@link BadRowPolicy#SKIP}, or null
   */
  public DispatchMapper(
      PermuteSpec spec,
      boolean hasProbs,
      boolean hasBatch,
      int[] partitionKeys,
      LongAccumulator badRowCount) {
    this.badRowCount = badRowCount;
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.hasBatch = hasBatch;
    this.partitionKeys = partitionKeys.clone();
    long rowBytes = spec.shape().rowBytes();
    this.chunkTokens =
        (int)
            Math.max(
                1, Math.min(1 << 20, (spec.settings().chunkBytes() + rowBytes - 1) / rowBytes));
  }

  /**
   * A new open chunk of (rank, batch), its hidden array first sized for {@code tokens}; {@code
   * rank} may be {@link DispatchChunk#ALL_RANKS}.
   */
  private DispatchChunk.Writer chunk(int rank, long batch, int tokens) {
    ProblemShape s = spec.shape();
    int key =
        rank == DispatchChunk.ALL_RANKS
            ? partitionKeys[(int) Math.floorMod(batch, (long) partitionKeys.length)]
            : partitionKeys[rank];
    return new DispatchChunk.Writer(
        rank, key, batch, s.topK(), s.rowBytes(), hasProbs, tokens, chunkTokens);
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    ExpertPlacement placement = spec.shape().expertPlacement();
    int ranks = placement.numRanks();
    boolean byBatch = spec.settings().partitioning() == Partitioning.BATCH;
    long chunkBytes = spec.settings().chunkBytes();
    Map<Long, DispatchChunk.Writer[]> open = new LinkedHashMap<>();
    Set<Long> sent = new HashSet<>(); // (batch, rank) pairs that got a chunk, as batch * R + rank
    Map<Long, Boolean> seen = new LinkedHashMap<>();
    ArrayDeque<Row> ready = new ArrayDeque<>();
    return new Iterator<>() {
      private long buffered;
      private long skippedHere;
      private boolean done;

      @Override
      public boolean hasNext() {
        while (ready.isEmpty() && !done) {
          if (in.hasNext()) {
            add(in.next());
          } else {
            flushAll();
            for (long b : byBatch ? Set.<Long>of() : seen.keySet()) {
              for (int r = 0; r < ranks; r++) {
                if (!sent.contains(b * ranks + r)) {
                  ready.add(chunk(r, b, 0).finish().toRow());
                }
              }
            }
            done = true;
          }
        }
        return !ready.isEmpty();
      }

      @Override
      public Row next() {
        if (!hasNext()) {
          throw new NoSuchElementException();
        }
        return ready.poll();
      }

      private void add(Row r) {
        TokenRows.Parsed p;
        try {
          p = TokenRows.parse(r, spec.shape(), hasProbs, hasBatch);
        } catch (IllegalArgumentException e) {
          if (spec.settings().badRows() != BadRowPolicy.SKIP) {
            throw e;
          }
          if (badRowCount != null) {
            badRowCount.add(1);
          }
          if (skippedHere++ < 10) {
            LOG.warn("skipping bad row (spark.moeprep.badRows=skip): {}", e.getMessage());
          }
          return;
        }
        long t = p.tokenId();
        int[] ids = p.ids();
        byte[] hidden = p.hidden();
        float[] probs = p.probs();
        long batch = p.batch();
        seen.put(batch, Boolean.TRUE);
        DispatchChunk.Writer[] chunks =
            open.computeIfAbsent(batch, b -> new DispatchChunk.Writer[byBatch ? 1 : ranks]);
        if (byBatch) {
          append(chunks, 0, DispatchChunk.ALL_RANKS, batch, t, ids, probs, hidden);
        } else if (spec.settings().dispatch() == Dispatch.ALL_GATHER) {
          for (int rank = 0; rank < ranks; rank++) {
            append(chunks, rank, rank, batch, t, ids, probs, hidden);
          }
        } else {
          boolean any = false;
          int[][] masked = RankMasks.perRank(ids, placement);
          for (int rank = 0; rank < ranks; rank++) {
            if (masked[rank] != null) {
              any = true;
              append(chunks, rank, rank, batch, t, masked[rank], probs, hidden);
            }
          }
          if (!any) {
            append(chunks, 0, 0, batch, t, ids, probs, hidden);
          }
        }
        if (buffered >= 8 * chunkBytes) {
          flushAll();
        }
      }

      /** Adds a token to the open chunk {@code chunks[slot]}, bound for {@code rank}. */
      private void append(
          DispatchChunk.Writer[] chunks,
          int slot,
          int rank,
          long batch,
          long t,
          int[] ids,
          float[] probs,
          byte[] h) {
        DispatchChunk.Writer c = chunks[slot];
        if (c == null) {
          c = chunk(rank, batch, Math.min(chunkTokens, 1024));
          chunks[slot] = c;
        }
        c.add(t, ids, probs, h);
        buffered += h.length;
        if (c.tokens() >= chunkTokens) {
          emit(c);
          chunks[slot] = null;
        }
      }

      private void emit(DispatchChunk.Writer c) {
        ready.add(c.finish().toRow());
        if (!byBatch) {
          sent.add(c.batch() * ranks + c.rank());
        }
        buffered -= c.hiddenBytes();
      }

      private void flushAll() {
        for (DispatchChunk.Writer[] chunks : open.values()) {
          for (DispatchChunk.Writer c : chunks) {
            if (c != null && c.tokens() > 0) {
              emit(c);
            }
          }
        }
        open.clear();
        buffered = 0;
      }
    };
  }
}
