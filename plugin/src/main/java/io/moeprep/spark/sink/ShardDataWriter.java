package io.moeprep.spark.sink;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.write.DataWriter;

/**
 * One task attempt of the sink: writes each (rank, batch) of its partition, whose parts arrive
 * consecutively and in part order, to {@code rank=R-batch=B.safetensors} in the attempt's own
 * staging directory, one file at a time, and names the complete files in its commit message. {@link
 * #abort()} deletes the attempt's directory; a (rank, batch) whose parts do not all arrive together
 * fails the task, naming the part expected and the one that came.
 */
final class ShardDataWriter implements DataWriter<InternalRow> {
  /** Buffer of the file system's output streams, in bytes. */
  private static final int STREAM_BUFFER = 1 << 20;

  private final FileSystem fs;
  private final Path attemptDir;
  private final ShardRows rows;
  private final int partition;
  private final long taskId;
  private final List<StagedFile> staged = new ArrayList<>();
  private final Set<String> seen = new HashSet<>();
  private RankBatchFile current;
  private Path currentPath;

  ShardDataWriter(FileSystem fs, Path attemptDir, ShardRows rows, int partition, long taskId) {
    this.fs = fs;
    this.attemptDir = attemptDir;
    this.rows = rows;
    this.partition = partition;
    this.taskId = taskId;
  }

  @Override
  public void write(InternalRow row) throws IOException {
    ShardPart p = rows.read(row);
    if (current != null) {
      current.add(p);
    } else {
      if (p.part() != 0) {
        throw new IllegalArgumentException(
            p.where()
                + ": part 0 of this (rank, batch) was expected first in partition "
                + partition
                + ", but part "
                + p.part()
                + " came: the parts of a (rank, batch) must come consecutively, in part order,"
                + " within one partition (ShardSchema.inWriteOrder arranges them)");
      }
      String relative = SinkOutput.relativePath(p.epRank(), p.batch());
      if (!seen.add(relative)) {
        throw new IllegalArgumentException(
            p.where()
                + ": this (rank, batch) comes a second time in partition "
                + partition
                + ": each (rank, batch) must be written once");
      }
      Path path = new Path(attemptDir, SinkOutput.stagedName(p.epRank(), p.batch()));
      current = RankBatchFile.start(p, () -> fs.create(path, false, STREAM_BUFFER));
      currentPath = path;
    }
    if (current.complete()) {
      long bytes = current.fileBytes();
      current.finish();
      staged.add(new StagedFile(p.epRank(), p.batch(), partition, currentPath.toString(), bytes));
      RankBatchFile done = current;
      current = null;
      done.close();
    }
  }

  @Override
  public ShardCommitMessage commit() {
    if (current != null) {
      throw new IllegalArgumentException(
          current.where()
              + ": partition "
              + partition
              + " ended before part "
              + current.nextPart()
              + " of "
              + current.parts()
              + ": the parts of a (rank, batch) must all come within one partition"
              + " (ShardSchema.inWriteOrder arranges them)");
    }
    return new ShardCommitMessage(partition, taskId, staged);
  }

  @Override
  public void abort() throws IOException {
    closeCurrent();
    fs.delete(attemptDir, true);
  }

  @Override
  public void close() {
    closeCurrent();
  }

  private void closeCurrent() {
    if (current != null) {
      RankBatchFile f = current;
      current = null;
      f.close();
    }
  }
}
