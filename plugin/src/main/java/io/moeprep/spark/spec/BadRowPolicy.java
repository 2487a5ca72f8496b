package io.moeprep.spark.spec;

/** What a permute does with an input row that fails validation ({@code spark.moeprep.badRows}). */
public enum BadRowPolicy {
  /** The job fails with a message naming the row's token id (the default). */
  FAIL,
  /**
   * The row is left out of the permute, counted, and listed with its reason in {@code
   * PermuteOutput.badRows()}.
   */
  SKIP;

  /** Parses {@code fail | skip}, ignoring case. */
  public static BadRowPolicy parse(String s) {
    return Choices.parse(BadRowPolicy.class, "badRows", s);
  }
}
