package io.moeprep.spark.sink;

import java.util.List;
import org.apache.spark.sql.connector.write.WriterCommitMessage;

/**
 * What a committed task attempt wrote: its complete (rank, batch) files under its staging
 * directory, which the job commit moves into place.
 *
 * @param partition the Spark partition
 * @param taskId the Spark task id of the attempt
 * @param files the staged files, in the order written
 */
record ShardCommitMessage(int partition, long taskId, List<StagedFile> files)
    implements WriterCommitMessage {
  private static final long serialVersionUID = 1L;

  ShardCommitMessage {
    files = List.copyOf(files);
  }
}
