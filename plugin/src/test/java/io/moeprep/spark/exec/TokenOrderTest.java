package io.moeprep.spark.exec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** A batch's tokens in id order, wherever they arrived, and each id once. */
class TokenOrderTest {

  @Test
  void tokensThatArriveInOrderKeepIt() {
    TokenOrder o = TokenOrder.of(new long[] {2, 5, 9}, 0);
    assertTrue(o.arrivedSorted());
    assertNull(o.order());
    assertArrayEquals(new long[] {2, 5, 9}, o.sortedIds());
    assertEquals(2, o.source(2));
    assertEquals(0, TokenOrder.of(new long[0], 0).size());
  }

  @Test
  void tokensFromSeveralChunksAreSorted() {
    TokenOrder o = TokenOrder.of(new long[] {7, 1, 9, 3}, 0);
    assertFalse(o.arrivedSorted());
    assertArrayEquals(new long[] {1, 3, 7, 9}, o.sortedIds());
    assertArrayEquals(new int[] {1, 3, 0, 2}, o.order());
    assertEquals(3, o.source(1));
  }

  @Test
  void aTokenTwiceInABatchIsRefused() {
    assertEquals(
        "token_id=4: appears more than once in batch 12",
        assertThrows(IllegalArgumentException.class, () -> TokenOrder.of(new long[] {4, 1, 4}, 12))
            .getMessage());
  }
}
