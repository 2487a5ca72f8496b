package io.moeprep.spark.spec;

import io.moeprep.kernels.contract.ExpertPlacement;
import java.util.Arrays;

/**
 * A token's routing as each rank sees it under {@link Dispatch#ALL_TO_ALL}: the rank owning an
 * expert keeps its slot, every other rank sees {@code -1} there. The ranks with at least one slot
 * are the token's destinations. Used by the dispatch and by the SQL functions {@code moe_mask_rank}
 * and {@code moe_ranks}, so that both say the same.
 */
public final class RankMasks {
  private RankMasks() {}

  /**
   * For each rank of {@code placement}, {@code expertIds} masked to it ({@code -1} where another
   * rank owns the expert, and where the id is {@code -1}), or {@code null} for a rank that owns
   * none of the token's experts.
   *
   * @param expertIds the token's {@code K} expert ids, each in {@code [0, E)} or {@code -1}
   */
  public static int[][] perRank(int[] expertIds, ExpertPlacement placement) {
    int[][] masked = new int[placement.numRanks()][];
    for (int j = 0; j < expertIds.length; j++) {
      if (expertIds[j] < 0) {
        continue;
      }
      int rank = placement.rankOf(expertIds[j]);
      if (masked[rank] == null) {
        masked[rank] = new int[expertIds.length];
        Arrays.fill(masked[rank], -1);
      }
      masked[rank][j] = expertIds[j];
    }
    return masked;
  }
}
