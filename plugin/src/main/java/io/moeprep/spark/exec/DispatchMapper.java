package io.moeprep.spark.exec;

import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.api.Dispatch;
import io.moeprep.spark.api.PermuteSpec;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;

/**
 * The map side of dispatch: validates each token row and emits one {@link
 * io.moeprep.spark.api.Schemas#DISPATCH} record per destination rank. Under ALL_TO_ALL the
 * destinations are the ranks owning at least one of the token's experts, and the routing is masked
 * to each (the {@code -1} sentinels are born here); a token with no valid slot goes to rank 0 so
 * that it still has a row-map entry. Under ALL_GATHER every rank gets the token unmasked.
 */
public final class DispatchMapper implements FlatMapFunction<Row, Row> {
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
  public Iterator<Row> call(Row r) {
    if (placement == null) {
      placement = spec.expertPlacement();
    }
    long t = TokenRows.tokenId(r);
    int[] ids = TokenRows.expertIds(r, t, spec);
    byte[] hidden = TokenRows.hidden(r, t, spec);
    float[] probs = TokenRows.probs(r, t, spec, hasProbs);
    long batch = TokenRows.batch(r, t, spec, hasBatch);
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
