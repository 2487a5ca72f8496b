package io.moeprep.spark.api;

import java.util.Locale;

/** What a permute does with an input row that fails validation ({@code spark.moeprep.badRows}). */
public enum BadRowPolicy {
  /** The job fails with a message naming the row's token id (the default). */
  FAIL,
  /**
   * The row is left out of the permute, counted, and listed with its reason in {@link
   * PermuteOutput#badRows()}.
   */
  SKIP;

  /** Parses {@code fail | skip}, ignoring case. */
  public static BadRowPolicy parse(String s) {
    try {
      return valueOf(s.trim().toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          "badRows '" + s + "' is invalid: must be one of fail, skip", e);
    }
  }
}
