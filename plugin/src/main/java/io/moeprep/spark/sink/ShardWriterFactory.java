package io.moeprep.spark.sink;

import java.io.IOException;
import java.io.UncheckedIOException;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.write.DataWriter;
import org.apache.spark.sql.connector.write.DataWriterFactory;

/** Makes each task attempt's {@link ShardDataWriter}, on the executors. */
final class ShardWriterFactory implements DataWriterFactory {
  private static final long serialVersionUID = 1L;

  private final String stagingRoot;
  private final int[] ordinals;
  private final HadoopConf conf;

  /**
   * @param stagingRoot the job's staging directory ({@link SinkOutput#stagingRoot()})
   * @param ordinals the shard columns' ordinals in the input rows
   */
  ShardWriterFactory(String stagingRoot, int[] ordinals, HadoopConf conf) {
    this.stagingRoot = stagingRoot;
    this.ordinals = ordinals.clone();
    this.conf = conf;
  }

  @Override
  public DataWriter<InternalRow> createWriter(int partitionId, long taskId) {
    Path root = new Path(stagingRoot);
    try {
      FileSystem fs = root.getFileSystem(conf.get());
      return new ShardDataWriter(
          fs,
          SinkOutput.attemptDir(root, partitionId, taskId),
          new ShardRows(ordinals),
          partitionId,
          taskId);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot open the file system of " + stagingRoot, e);
    }
  }
}
