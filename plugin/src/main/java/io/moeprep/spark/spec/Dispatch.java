package io.moeprep.spark.spec;

/** How tokens reach the rank partitions. */
public enum Dispatch {
  /**
   * Each token goes, through Spark's shuffle, to every rank owning at least one of its experts,
   * with its routing masked to that rank ({@code -1} elsewhere). A token with no valid slot goes to
   * rank 0 so that it still appears in a row map.
   */
  ALL_TO_ALL,
  /** Every rank partition receives the whole batch and masks it to its own experts. */
  ALL_GATHER;

  /** Parses {@code all_to_all | all_gather}, ignoring case. */
  public static Dispatch parse(String s) {
    return Choices.parse(Dispatch.class, "dispatch", s);
  }
}
