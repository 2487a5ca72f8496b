package io.moeprep.spark.sink;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.connector.write.BatchWrite;
import org.apache.spark.sql.connector.write.DataWriterFactory;
import org.apache.spark.sql.connector.write.PhysicalWriteInfo;
import org.apache.spark.sql.connector.write.Write;
import org.apache.spark.sql.connector.write.WriterCommitMessage;

/**
 * The sink's job: the writer factory for the tasks, and the job commit and abort of {@link
 * SinkOutput} on the driver. Spark's commit coordinator lets one attempt per partition commit.
 */
final class ShardBatchWrite implements Write, BatchWrite {
  private final String out;
  private final String queryId;
  private final boolean overwrite;
  private final int[] ordinals;
  private final HadoopConf conf;

  /**
   * @param out the qualified output directory
   * @param queryId Spark's id of the write, which names the staging directory
   * @param overwrite replace the output's content (else append)
   * @param ordinals the shard columns' ordinals in the input rows
   */
  ShardBatchWrite(String out, String queryId, boolean overwrite, int[] ordinals, HadoopConf conf) {
    this.out = out;
    this.queryId = queryId;
    this.overwrite = overwrite;
    this.ordinals = ordinals;
    this.conf = conf;
  }

  @Override
  public String description() {
    return SafetensorsSink.FORMAT + " " + (overwrite ? "overwrite" : "append") + " " + out;
  }

  @Override
  public BatchWrite toBatch() {
    return this;
  }

  @Override
  public DataWriterFactory createBatchWriterFactory(PhysicalWriteInfo info) {
    return new ShardWriterFactory(output().stagingRoot().toString(), ordinals, conf);
  }

  @Override
  public void commit(WriterCommitMessage[] messages) {
    List<StagedFile> files = new ArrayList<>();
    for (WriterCommitMessage m : messages) {
      if (m == null) {
        throw new IllegalStateException("a task's commit message is missing: nothing was moved");
      }
      files.addAll(((ShardCommitMessage) m).files());
    }
    try {
      output().commit(files, overwrite);
    } catch (IOException e) {
      throw new UncheckedIOException("committing " + out + " failed", e);
    }
  }

  @Override
  public void abort(WriterCommitMessage[] messages) {
    try {
      output().abort();
    } catch (IOException e) {
      throw new UncheckedIOException("aborting the write to " + out + " failed", e);
    }
  }

  private SinkOutput output() {
    Path p = new Path(out);
    try {
      return new SinkOutput(p.getFileSystem(conf.get()), p, queryId);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot open the file system of " + out, e);
    }
  }
}
