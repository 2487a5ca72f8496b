package io.moeprep.it;

import java.util.concurrent.atomic.AtomicInteger;
import org.apache.hadoop.mapreduce.JobContext;
import org.apache.spark.internal.io.FileCommitProtocol;
import org.apache.spark.sql.execution.datasources.SQLHadoopMapReduceCommitProtocol;
import scala.collection.immutable.Seq;

/**
 * Spark's default SQL commit protocol, counting in the driver the job commits that have started, so
 * that a test can tell output that appears at the final path before the commit (partial output)
 * from the commit's own moves.
 */
public class WatchedCommitProtocol extends SQLHadoopMapReduceCommitProtocol {
  private static final long serialVersionUID = 1L;

  /** Job commits started in this JVM (the driver). */
  static final AtomicInteger COMMITS_STARTED = new AtomicInteger();

  public WatchedCommitProtocol(String jobId, String path, boolean dynamicPartitionOverwrite) {
    super(jobId, path, dynamicPartitionOverwrite);
  }

  @Override
  public void commitJob(
      JobContext jobContext, Seq<FileCommitProtocol.TaskCommitMessage> taskCommits) {
    COMMITS_STARTED.incrementAndGet();
    super.commitJob(jobContext, taskCommits);
  }
}
