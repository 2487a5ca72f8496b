package io.moeprep.spark.spec;

/**
 * How a permute's work is laid out over Spark partitions. Both give the same bytes for every (rank,
 * batch); they differ in what moves through the shuffle and in what a partition holds.
 */
public enum Partitioning {
  /**
   * The all-to-all: partition {@code r} holds rank {@code r}, batch by batch. Each token crosses
   * the shuffle once per rank that receives it (under {@link Dispatch#ALL_TO_ALL}, the ranks of its
   * experts; under {@link Dispatch#ALL_GATHER}, every rank), and the rank stage runs as many tasks
   * as there are ranks. For consumers that read partition {@code r} as rank {@code r}.
   */
  RANK,
  /**
   * Shuffle-less: each batch goes once to one task (one shuffle by batch, or none when the input is
   * already partitioned by its batch column), which permutes it for every rank in turn. The rank
   * stage runs as many tasks as there are batches; a partition holds whole batches of every rank,
   * each row carrying its {@code ep_rank}. For output stored per rank ({@code
   * partitionBy("ep_rank")}, the safetensors sink).
   */
  BATCH;

  /** Parses {@code rank | batch}, ignoring case. */
  public static Partitioning parse(String s) {
    return Choices.parse(Partitioning.class, "partitioning", s);
  }
}
