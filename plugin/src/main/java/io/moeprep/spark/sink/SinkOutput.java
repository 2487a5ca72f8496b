package io.moeprep.spark.sink;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The sink's output directory {@code OUT} and the job side of its commit protocol, over Hadoop's
 * {@link FileSystem} (local, {@code hdfs://}, {@code s3a://}, ...). Spark-free.
 *
 * <p>Layout: {@code OUT/rank=R/batch=B.safetensors}, one file per (rank, batch), and {@code
 * OUT/_SUCCESS} (empty), written last by every successful job. Task attempts write {@code
 * OUT/_temporary/QUERY/attempt-P-T/rank=R-batch=B.safetensors} (partition {@code P}, Spark task id
 * {@code T}, unique per attempt), which readers ignore (a name starting with {@code _}).
 *
 * <p>{@link #commit}: checks first, moving nothing when a check fails: that no (rank, batch) was
 * written twice in the job, and, when appending, that no file to be moved in exists already. Then
 * it deletes {@code _SUCCESS}, moves the earlier output aside (overwrite only: every entry of
 * {@code OUT} but {@code _temporary}, into {@code OUT/_temporary/QUERY-replaced}), moves each
 * staged file into place, writes {@code _SUCCESS}, and deletes the earlier output and the staging
 * directory. If a move fails, it undoes what it did (deletes the files moved in and the directories
 * it made, moves the earlier output back, restores {@code _SUCCESS}) before failing. {@link #abort}
 * deletes the job's staging directory. Staged files that no commit message names (a failed or lost
 * attempt) are never moved.
 */
final class SinkOutput {
  /** The hidden directory under {@code OUT} holding the jobs' staging directories. */
  static final String STAGING = "_temporary";

  /** The marker of a complete output, written last. */
  static final String SUCCESS = "_SUCCESS";

  private static final Logger LOG = LoggerFactory.getLogger(SinkOutput.class);

  private final FileSystem fs;
  private final Path out;
  private final String queryId;

  /**
   * The output {@code out} of the write whose id is {@code queryId}.
   *
   * @param out a qualified path
   */
  SinkOutput(FileSystem fs, Path out, String queryId) {
    this.fs = fs;
    this.out = out;
    this.queryId = queryId;
  }

  /** The path of a (rank, batch) under {@code OUT}: {@code rank=R/batch=B.safetensors}. */
  static String relativePath(int epRank, long batch) {
    return "rank=" + epRank + "/batch=" + batch + ".safetensors";
  }

  /** {@code OUT/_temporary/QUERY}: this job's staging directory. */
  Path stagingRoot() {
    return new Path(new Path(out, STAGING), queryId);
  }

  /**
   * The name of a (rank, batch)'s file in a task attempt's staging directory, {@code
   * rank=R-batch=B.safetensors}: flat, so that staging makes one directory per attempt.
   */
  static String stagedName(int epRank, long batch) {
    return "rank=" + epRank + "-batch=" + batch + ".safetensors";
  }

  /** The staging directory of one task attempt. */
  static Path attemptDir(Path stagingRoot, int partition, long taskId) {
    return new Path(stagingRoot, "attempt-" + partition + "-" + taskId);
  }

  /**
   * Moves the staged files into place (see the class comment).
   *
   * @param overwrite replace the earlier content of {@code OUT} (else append: never replace a file)
   * @throws IllegalArgumentException when a (rank, batch) was staged twice, or when appending would
   *     replace a file; nothing was moved then
   * @throws IOException when the file system fails; what was moved was moved back
   */
  void commit(List<StagedFile> files, boolean overwrite) throws IOException {
    Map<String, StagedFile> byTarget = new TreeMap<>();
    for (StagedFile f : files) {
      StagedFile other = byTarget.put(f.relativePath(), f);
      if (other != null) {
        throw new IllegalArgumentException(
            "rank="
                + f.epRank()
                + " batch="
                + f.batch()
                + " was written twice in this job (by the tasks of partitions "
                + Math.min(f.partition(), other.partition())
                + " and "
                + Math.max(f.partition(), other.partition())
                + "): each (rank, batch) must be written once; nothing was moved to "
                + out);
      }
    }
    if (!overwrite) {
      List<String> existing = new ArrayList<>();
      for (String rel : byTarget.keySet()) {
        if (fs.exists(new Path(out, rel))) {
          existing.add(rel);
        }
      }
      if (!existing.isEmpty()) {
        throw new IllegalArgumentException(
            "appending to "
                + out
                + " would replace "
                + existing.size()
                + " existing file(s) ("
                + String.join(", ", existing.subList(0, Math.min(5, existing.size())))
                + (existing.size() > 5 ? ", ..." : "")
                + "): append never replaces a file (write with mode overwrite to replace the"
                + " output); nothing was moved");
      }
    }
    Path success = new Path(out, SUCCESS);
    boolean hadSuccess = fs.exists(success);
    Path replaced = new Path(new Path(out, STAGING), queryId + "-replaced");
    List<String> movedAside = new ArrayList<>();
    List<Path> movedIn = new ArrayList<>();
    List<Path> madeDirs = new ArrayList<>();
    try {
      if (hadSuccess) {
        fs.delete(success, false);
      }
      if (overwrite) {
        for (FileStatus s : list(out)) {
          String name = s.getPath().getName();
          if (!name.equals(STAGING)) {
            fs.mkdirs(replaced);
            move(s.getPath(), new Path(replaced, name));
            movedAside.add(name);
          }
        }
      }
      Set<Path> dirs = new HashSet<>();
      for (Map.Entry<String, StagedFile> e : byTarget.entrySet()) {
        Path target = new Path(out, e.getKey());
        Path parent = target.getParent();
        if (dirs.add(parent) && !fs.exists(parent)) {
          fs.mkdirs(parent);
          madeDirs.add(parent);
        }
        move(new Path(e.getValue().path()), target);
        movedIn.add(target);
      }
      fs.create(success, true).close();
    } catch (IOException | RuntimeException | Error e) {
      undo(movedIn, madeDirs, movedAside, replaced, hadSuccess, success, e);
      throw e;
    }
    LOG.info("committed {} safetensors file(s) to {}", byTarget.size(), out);
    if (!movedAside.isEmpty()) {
      deleteQuietly(replaced);
    }
    cleanStaging();
  }

  /** Deletes this job's staging directory (and {@code _temporary} when nothing else is in it). */
  void abort() throws IOException {
    fs.delete(stagingRoot(), true);
    cleanStaging();
  }

  private void undo(
      List<Path> movedIn,
      List<Path> madeDirs,
      List<String> movedAside,
      Path replaced,
      boolean hadSuccess,
      Path success,
      Throwable failure) {
    for (Path p : movedIn) {
      try {
        fs.delete(p, false);
      } catch (IOException | RuntimeException e) {
        failure.addSuppressed(e);
      }
    }
    for (Path d : madeDirs) {
      try {
        fs.delete(d, false);
      } catch (IOException | RuntimeException e) {
        failure.addSuppressed(e);
      }
    }
    boolean restored = true;
    for (String name : movedAside) {
      try {
        move(new Path(replaced, name), new Path(out, name));
      } catch (IOException | RuntimeException e) {
        restored = false;
        failure.addSuppressed(e);
      }
    }
    if (!restored) {
      failure.addSuppressed(
          new IOException(
              "the earlier output of " + out + " was not restored: it is in " + replaced));
      return;
    }
    try {
      if (!movedAside.isEmpty()) {
        fs.delete(replaced, true);
      }
      if (hadSuccess) {
        fs.create(success, true).close();
      }
    } catch (IOException | RuntimeException e) {
      failure.addSuppressed(e);
    }
  }

  private FileStatus[] list(Path dir) throws IOException {
    try {
      return fs.listStatus(dir);
    } catch (FileNotFoundException e) {
      return new FileStatus[0];
    }
  }

  private void move(Path from, Path to) throws IOException {
    if (!fs.rename(from, to)) {
      throw new IOException("could not move " + from + " to " + to);
    }
  }

  private void cleanStaging() {
    deleteQuietly(stagingRoot());
    Path staging = new Path(out, STAGING);
    try {
      if (list(staging).length == 0) {
        fs.delete(staging, false);
      }
    } catch (IOException | RuntimeException e) {
      // another job may be staging there now: its directory stays
      LOG.debug("kept {}: {}", staging, e.toString());
    }
  }

  private void deleteQuietly(Path p) {
    try {
      fs.delete(p, true);
    } catch (IOException | RuntimeException e) {
      LOG.warn("could not delete {}: {}", p, e.toString());
    }
  }
}
