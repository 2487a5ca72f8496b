package io.moeprep.app.job;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.UUID;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * An output directory that appears only when complete: everything is written under a hidden
 * temporary sibling ({@code .NAME.tmp-UUID}, ignored by Spark's readers), which {@link #commit()}
 * renames to the final name. {@link #close()} without a commit deletes the temporary directory, so
 * a failed run leaves nothing behind. Works on any Hadoop file system whose rename of a directory
 * is atomic (local, HDFS).
 */
final class OutputDir implements AutoCloseable {
  private final FileSystem fs;
  private final Path target;
  private final Path tmp;
  private final boolean replace;
  private boolean committed;

  private OutputDir(FileSystem fs, Path target, boolean replace) throws IOException {
    this.fs = fs;
    this.target = target;
    this.replace = replace;
    this.tmp = new Path(target.getParent(), "." + target.getName() + ".tmp-" + UUID.randomUUID());
  }

  /**
   * Starts writing {@code path}.
   *
   * @param option the command-line option that named the path, for the error message
   * @param force whether an existing directory may be replaced
   * @throws IllegalArgumentException when the path exists and {@code force} is false
   */
  static OutputDir create(Configuration conf, String path, String option, boolean force)
      throws IOException {
    Path q = checkAvailable(conf, path, option, force);
    FileSystem fs = q.getFileSystem(conf);
    fs.mkdirs(q.getParent());
    return new OutputDir(fs, q, force);
  }

  /**
   * Checks that {@code path} can be written: it does not exist (or {@code force} allows replacing
   * it) and is not a root directory. Commands call it before Spark starts; {@link #create} again.
   *
   * @return the qualified path
   * @throws IllegalArgumentException naming {@code option}
   */
  static Path checkAvailable(Configuration conf, String path, String option, boolean force)
      throws IOException {
    Path p = new Path(path);
    FileSystem fs = p.getFileSystem(conf);
    Path q = fs.makeQualified(p);
    if (fs.exists(q) && !force) {
      throw new IllegalArgumentException(
          "output " + path + " exists: choose another " + option + " or add --force to replace it");
    }
    if (q.getParent() == null) {
      throw new IllegalArgumentException(
          "output " + path + " is a root directory: choose another " + option);
    }
    return q;
  }

  /**
   * The temporary directory's path plus {@code child} (or itself for an empty child), for a writer
   * that creates it (the directory does not exist before the first write).
   */
  String path(String child) {
    return child.isEmpty() ? tmp.toString() : new Path(tmp, child).toString();
  }

  /** The final path plus {@code child}. */
  String finalPath(String child) {
    return child.isEmpty() ? target.toString() : new Path(target, child).toString();
  }

  /** Writes a UTF-8 text file in the temporary directory. */
  void writeText(String child, String text) throws IOException {
    writeBytes(child, text.getBytes(StandardCharsets.UTF_8));
  }

  /** Writes a binary file in the temporary directory. */
  void writeBytes(String child, byte[] bytes) throws IOException {
    // the raw file system: no .crc files beside the manifests and the chart
    FileSystem raw = fs instanceof ChecksumFileSystem c ? c.getRawFileSystem() : fs;
    try (OutputStream os = raw.create(new Path(tmp, child), true)) {
      os.write(bytes);
    }
  }

  /** Moves the complete output into place (replacing an old one when allowed). */
  void commit() throws IOException {
    fs.mkdirs(tmp);
    Path old = null;
    if (fs.exists(target)) {
      if (!replace) {
        throw new IllegalArgumentException(
            "output " + target + " appeared while the job ran: add --force to replace it");
      }
      old = new Path(target.getParent(), "." + target.getName() + ".old-" + UUID.randomUUID());
      if (!fs.rename(target, old)) {
        throw new IOException("could not move the old output " + target + " aside");
      }
    }
    if (!fs.rename(tmp, target)) {
      if (old != null) {
        fs.rename(old, target);
      }
      throw new IOException("could not rename " + tmp + " to " + target);
    }
    committed = true;
    if (old != null) {
      fs.delete(old, true);
    }
  }

  /** Deletes the temporary directory unless committed. */
  @Override
  public void close() {
    if (!committed) {
      try {
        fs.delete(tmp, true);
      } catch (IOException e) {
        // best effort: the directory is hidden and named .tmp-
      }
    }
  }
}
