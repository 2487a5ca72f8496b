package io.moeprep.spark.exec;

/** Which of the permute outputs a rank task emits. */
public enum RankOutput {
  /** {@link io.moeprep.spark.api.Schemas#ROWS}. */
  ROWS,
  /** {@link io.moeprep.spark.api.Schemas#PACKED}. */
  PACKED,
  /** {@link io.moeprep.spark.api.Schemas#ROW_MAP}. */
  ROW_MAP,
  /** {@link io.moeprep.spark.api.Schemas#TOKENS_PER_EXPERT}. */
  TOKENS_PER_EXPERT
}
