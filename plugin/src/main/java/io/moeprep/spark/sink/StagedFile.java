package io.moeprep.spark.sink;

import java.io.Serializable;

/**
 * A complete (rank, batch) file that a task attempt wrote under its staging directory, named in its
 * commit message.
 *
 * @param epRank the EP rank
 * @param batch the batch
 * @param partition the Spark partition whose task wrote it
 * @param path the staged file (a Hadoop path string)
 * @param bytes its size in bytes
 */
record StagedFile(int epRank, long batch, int partition, String path, long bytes)
    implements Serializable {
  private static final long serialVersionUID = 1L;

  /** Its path under the output directory: {@code rank=R/batch=B.safetensors}. */
  String relativePath() {
    return SinkOutput.relativePath(epRank, batch);
  }
}
