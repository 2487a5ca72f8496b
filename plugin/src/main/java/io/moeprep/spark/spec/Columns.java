package io.moeprep.spark.spec;

import java.io.Serializable;

/**
 * The names of the input columns. {@code probs} and {@code batch} are used when the input has them;
 * the others are required.
 *
 * @param tokenId the token id column (long or int)
 * @param hidden the hidden row column (binary or {@code array<float>})
 * @param expertIds the routing column ({@code array<int>} or {@code array<bigint>})
 * @param probs the router weights column ({@code array<float>}), optional
 * @param batch the batch column (long), optional
 */
public record Columns(String tokenId, String hidden, String expertIds, String probs, String batch)
    implements Serializable {

  /** {@code token_id, hidden, expert_ids, probs, batch}. */
  public static final Columns DEFAULT =
      new Columns("token_id", "hidden", "expert_ids", "probs", "batch");
}
