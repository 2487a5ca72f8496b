package io.moeprep.spark.spec;

/** The layout of permuted data. */
public enum Layout {
  /**
   * One row per output row of the kernel, padding rows included ({@code token_id = -1}): {@code
   * ep_rank, batch, row, expert, local_expert, token_id, slot, prob, hidden}.
   */
  ROWS,
  /**
   * One row per (rank, batch, expert segment, part): {@code ep_rank, batch, expert, local_expert,
   * part, row_offset, rows, token_ids, slots, probs, hidden}, where {@code hidden} holds {@code
   * rows x H} elements in permuted order.
   */
  PACKED;

  /** Parses {@code rows | packed}, ignoring case. */
  public static Layout parse(String s) {
    return Choices.parse(Layout.class, "layout", s);
  }
}
