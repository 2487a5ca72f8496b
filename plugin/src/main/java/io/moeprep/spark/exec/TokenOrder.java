package io.moeprep.spark.exec;

import java.util.Arrays;

/**
 * The token-id order of one batch's tokens, as they arrived (from several chunks, in any order): a
 * batch is permuted in token-id order, and a token id appears once per batch. Both the rank tasks
 * on rows and the cudf route use it.
 */
public final class TokenOrder {
  private final long[] sortedIds;
  private final int[] order;

  private TokenOrder(long[] sortedIds, int[] order) {
    this.sortedIds = sortedIds;
    this.order = order;
  }

  /**
   * Orders the token ids of batch {@code batch} as they arrived.
   *
   * @throws IllegalArgumentException {@code token_id=T: appears more than once in batch B}
   */
  public static TokenOrder of(long[] ids, long batch) {
    int n = ids.length;
    boolean ascending = true;
    for (int t = 1; t < n && ascending; t++) {
      ascending = ids[t - 1] < ids[t];
    }
    if (ascending) {
      return new TokenOrder(ids.clone(), null);
    }
    Integer[] boxed = new Integer[n];
    for (int i = 0; i < n; i++) {
      boxed[i] = i;
    }
    Arrays.sort(boxed, (a, b) -> Long.compare(ids[a], ids[b]));
    int[] order = new int[n];
    long[] sorted = new long[n];
    for (int t = 0; t < n; t++) {
      order[t] = boxed[t];
      sorted[t] = ids[order[t]];
      if (t > 0 && sorted[t - 1] == sorted[t]) {
        throw new IllegalArgumentException(
            "token_id=" + sorted[t] + ": appears more than once in batch " + batch);
      }
    }
    return new TokenOrder(sorted, order);
  }

  /** Number of tokens. */
  public int size() {
    return sortedIds.length;
  }

  /** The ids in ascending order (a fresh array). */
  public long[] sortedIds() {
    return sortedIds.clone();
  }

  /** True when the tokens arrived in ascending id order. */
  public boolean arrivedSorted() {
    return order == null;
  }

  /** Where the {@code t}-th smallest token arrived (its index in the ids given to {@link #of}). */
  public int source(int t) {
    return order == null ? t : order[t];
  }

  /**
   * For each rank {@code t} in id order, where that token arrived (a fresh array), or {@code null}
   * when they {@link #arrivedSorted() arrived sorted}.
   */
  public int[] order() {
    return order == null ? null : order.clone();
  }
}
