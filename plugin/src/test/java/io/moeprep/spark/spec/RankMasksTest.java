package io.moeprep.spark.spec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import io.moeprep.kernels.contract.ExpertPlacement;
import org.junit.jupiter.api.Test;

/** A token's routing as each rank sees it under ALL_TO_ALL. */
class RankMasksTest {

  @Test
  void eachRankKeepsItsOwnSlotsAndRanksWithoutOneGetNone() {
    ExpertPlacement p = ExpertPlacement.explicit(new int[] {2, 0, 2, 1, 0, 2}, 4);
    int[][] m = RankMasks.perRank(new int[] {2, -1, 1, 5, 4}, p);
    assertArrayEquals(new int[] {-1, -1, 1, -1, 4}, m[0]);
    assertNull(m[1], "rank 1 owns expert 3 only");
    assertArrayEquals(new int[] {2, -1, -1, 5, -1}, m[2]);
    assertNull(m[3], "rank 3 owns no expert");
    int[][] none = RankMasks.perRank(new int[] {-1, -1}, p);
    for (int[] r : none) {
      assertNull(r);
    }
  }
}
