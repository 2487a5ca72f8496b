package io.moeprep.spark.exec;

import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.api.Dispatch;
import io.moeprep.spark.api.PermuteSpec;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Set;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;

/**
 * The map side of dispatch: validates each token row and emits one {@link
 * io.moeprep.spark.api.Schemas#DISPATCH} record per destination rank. Under ALL_TO_ALL the
 * destinations are the ranks owning at least one of the token's experts, and the routing is masked
 * to each (the {@code -1} sentinels are born here); a token with no valid slot goes to rank 0 so
 * that it still has a row-map entry. Under ALL_GATHER every rank gets the token unmasked.
 *
 * <p>After its last token, a map task also sends every rank one marker per batch it saw ({@code
 * token_id = -1}), so that every rank permutes every batch, even one without any of its tokens: a
 * padded layout (per-expert capacity with padding, numOut) then has its zero rows on every rank, as
 * on a single device.
 */
public final class DispatchMapper implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final boolean hasBatch;
  private final int[] partitionKeys;
  private transient ExpertPlacement placement;

  /**
   * @param partitionKeys per rank, a key that Spark's hash partitioning sends to partition {@code
   *     rank} (see {@link RankPartitioning})
   */
  public DispatchMapper(PermuteSpec spec, boolean hasProbs, boolean hasBatch, int[] partitionKeys) {
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.hasBatch = hasBatch;
    this.partitionKeys = partitionKeys.clone();
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    Set<Long> batches = new LinkedHashSet<>();
    return new Iterator<>() {
      private Iterator<Row> current = Collections.emptyIterator();
      private boolean markersQueued;

      @Override
      public boolean hasNext() {
        while (!current.hasNext()) {
          if (in.hasNext()) {
            current = dispatch(in.next(), batches);
          } else if (!markersQueued) {
            markersQueued = true;
            current = markers(batches);
          } else {
            return false;
          }
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
    };
  }

  private Iterator<Row> markers(Set<Long> batches) {
    List<Row> out = new ArrayList<>();
    for (long b : batches) {
      for (int rank = 0; rank < placement().numRanks(); rank++) {
        out.add(record(rank, b, -1, new byte[0], new int[0], null));
      }
    }
    return out.iterator();
  }

  private ExpertPlacement placement() {
    if (placement == null) {
      placement = spec.expertPlacement();
    }
    return placement;
  }

  private Iterator<Row> dispatch(Row r, Set<Long> batches) {
    ExpertPlacement placement = placement();
    long t = TokenRows.tokenId(r);
    int[] ids = TokenRows.expertIds(r, t, spec);
    byte[] hidden = TokenRows.hidden(r, t, spec);
    float[] probs = TokenRows.probs(r, t, spec, hasProbs);
    long batch = TokenRows.batch(r, t, spec, hasBatch);
    batches.add(batch);
    int ranks = placement.numRanks();
    List<Row> out = new ArrayList<>(2);
    if (spec.dispatch() == Dispatch.ALL_GATHER) {
      for (int rank = 0; rank < ranks; rank++) {
        out.add(record(rank, batch, t, hidden, ids, probs));
      }
      return out.iterator();
    }
    boolean[] seen = new boolean[ranks];
    boolean any = false;
    for (int id : ids) {
      if (id >= 0) {
        seen[placement.rankOf(id)] = true;
        any = true;
      }
    }
    if (!any) {
      out.add(record(0, batch, t, hidden, ids, probs));
      return out.iterator();
    }
    for (int rank = 0; rank < ranks; rank++) {
      if (!seen[rank]) {
        continue;
      }
      int[] masked = new int[ids.length];
      for (int j = 0; j < ids.length; j++) {
        masked[j] = ids[j] >= 0 && placement.rankOf(ids[j]) == rank ? ids[j] : -1;
      }
      out.add(record(rank, batch, t, hidden, masked, probs));
    }
    return out.iterator();
  }

  private Row record(int rank, long batch, long t, byte[] hidden, int[] ids, float[] probs) {
    return RowFactory.create(rank, partitionKeys[rank], batch, t, hidden, ids, probs);
  }
}
