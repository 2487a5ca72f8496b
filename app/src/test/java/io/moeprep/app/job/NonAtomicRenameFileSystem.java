package io.moeprep.app.job;

import java.io.IOException;
import java.net.URI;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileUtil;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;

/**
 * The local file system under the scheme {@code nonatomic:}, whose rename is a copy followed by a
 * delete, as on an object store: a renamed directory appears file by file. Every rename is recorded
 * in {@link #RENAMES}. Register it with {@code fs.nonatomic.impl} (Spark: {@code
 * spark.hadoop.fs.nonatomic.impl}).
 */
public class NonAtomicRenameFileSystem extends RawLocalFileSystem {
  /** The scheme. */
  public static final String SCHEME = "nonatomic";

  /** One rename: its source and target, and whether the source was a directory. */
  public record Rename(String from, String to, boolean directory) {}

  /** Every rename since the last clear, in order. */
  public static final List<Rename> RENAMES = new CopyOnWriteArrayList<>();

  @Override
  public URI getUri() {
    return URI.create(SCHEME + ":///");
  }

  @Override
  public String getScheme() {
    return SCHEME;
  }

  @Override
  public boolean rename(Path src, Path dst) throws IOException {
    FileStatus s;
    try {
      s = getFileStatus(src);
    } catch (java.io.FileNotFoundException e) {
      return false;
    }
    if (exists(dst) && !getFileStatus(dst).isDirectory()) {
      return false; // Hadoop's rename does not replace a file
    }
    RENAMES.add(new Rename(src.toString(), dst.toString(), s.isDirectory()));
    return FileUtil.copy(this, src, this, dst, true, getConf());
  }
}
