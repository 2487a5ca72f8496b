package io.moeprep.app.job;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;

/**
 * A job's output directory, committed without renaming any directory, so that the committers
 * configured for the file system (S3A's among them) apply and object stores copy nothing twice:
 *
 * <ol>
 *   <li>{@link #create} takes the directory's lock, {@value #LOCK}, created only if absent ({@code
 *       FileSystem.create} without overwrite) and holding this run's id: a second run on the same
 *       directory fails at once, naming the run that holds it.
 *   <li>Spark writes each dataset in place, through its own commit protocol, under this run's
 *       generation directory {@code DIR/generation=ID/} ({@link #path}).
 *   <li>{@link #commit()} checks that the lock is still this run's, then writes the small files
 *       ({@link #writeText}, {@link #writeBytes}) at the top of {@code DIR}, each through a hidden
 *       temporary file, the last one (the manifest, which names the generation) being the commit
 *       point; only then are the earlier generation and anything else in {@code DIR} deleted.
 * </ol>
 *
 * <p>A reader that starts from the manifest (verify, stats, unpermute; {@link #datasetPath}) sees a
 * whole run or none: a failed run, {@code --force} included, never reaches its manifest, and {@link
 * #close()} deletes its generation, so the earlier output stays as it was. {@link #close()}
 * releases the lock. A run that dies without closing leaves the lock: the next run's error names
 * it.
 */
final class OutputDir implements AutoCloseable {
  /** The lock file, hidden from Spark's readers (leading underscore). */
  static final String LOCK = "_moeprep.lock";

  /** The manifest key naming the generation directory of the datasets. */
  static final String GENERATION = "generation";

  /**
   * The prefix of a generation directory: a partition directory to Spark, so that a plain read of a
   * whole {@code generate} directory still finds the table (with a {@code generation} column).
   */
  static final String GENERATION_PREFIX = "generation=";

  private final FileSystem fs;
  private final Path target;
  private final String runId;
  private final String generation;
  private final boolean createdTarget;
  private final Map<String, byte[]> files = new LinkedHashMap<>();
  private boolean locked;
  private boolean committed;

  private OutputDir(FileSystem fs, Path target, String runId, boolean createdTarget) {
    this.fs = fs;
    this.target = target;
    this.runId = runId;
    this.generation = GENERATION_PREFIX + runId;
    this.createdTarget = createdTarget;
  }

  /**
   * Starts writing {@code path}: takes its lock and checks again that it may be written.
   *
   * @param option the command-line option that named the path, for the error message
   * @param force whether an existing directory may be replaced
   * @throws IllegalArgumentException when the path exists and {@code force} is false, or another
   *     run holds its lock
   */
  static OutputDir create(Configuration conf, String path, String option, boolean force)
      throws IOException {
    Path q = checkAvailable(conf, path, option, force);
    FileSystem fs = q.getFileSystem(conf);
    boolean created = !fs.exists(q);
    fs.mkdirs(q);
    String runId =
        String.format(Locale.ROOT, "%x", System.currentTimeMillis())
            + "-"
            + UUID.randomUUID().toString().substring(0, 8);
    OutputDir dir = new OutputDir(fs, q, runId, created);
    dir.lock(path);
    try {
      if (!force && dir.hasOtherContent()) {
        throw new IllegalArgumentException(
            "output "
                + path
                + " exists: choose another "
                + option
                + " or add --force to replace it");
      }
    } catch (RuntimeException | IOException e) {
      dir.close();
      throw e;
    }
    return dir;
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
   * Where a dataset named in a manifest lies: {@code dir/GENERATION/name} when the manifest names a
   * generation, else {@code dir/name} (outputs of earlier versions). {@code name} empty: the
   * generation directory itself.
   */
  static String datasetPath(String dir, JsonNode manifest, String name) {
    String gen = manifest == null ? "" : manifest.path(GENERATION).asText("");
    String base = gen.isEmpty() ? dir : new Path(dir, gen).toString();
    return name.isEmpty() ? base : new Path(base, name).toString();
  }

  /** The generation directory of this run, the manifest's {@value #GENERATION}. */
  String generation() {
    return generation;
  }

  /**
   * The path of dataset {@code child} of this run (under its generation directory), or the
   * generation directory itself for an empty child, for a Spark writer that creates it.
   */
  String path(String child) {
    Path gen = new Path(target, generation);
    return child.isEmpty() ? gen.toString() : new Path(gen, child).toString();
  }

  /** Adds a UTF-8 text file at the top of the directory, written by {@link #commit()}. */
  void writeText(String child, String text) {
    writeBytes(child, text.getBytes(StandardCharsets.UTF_8));
  }

  /**
   * Adds a file at the top of the directory, written by {@link #commit()} in the order added: add
   * the manifest last.
   */
  void writeBytes(String child, byte[] bytes) {
    if (child.contains("/") || child.equals(LOCK) || child.startsWith(GENERATION_PREFIX)) {
      throw new IllegalArgumentException("invalid top-level file name " + child);
    }
    files.remove(child);
    files.put(child, bytes);
  }

  /**
   * Commits: checks the lock, writes the files added (the last one is the commit point), then
   * deletes what the earlier output left (its generation, its files).
   *
   * @throws IllegalStateException when this run no longer holds the lock
   */
  void commit() throws IOException {
    checkLock();
    FileSystem raw = raw();
    // every file first, hidden; then each moved into place, the commit point last
    for (Map.Entry<String, byte[]> f : files.entrySet()) {
      try (OutputStream os = raw.create(hidden(f.getKey()), true)) {
        os.write(f.getValue());
      }
    }
    checkLock();
    for (String name : files.keySet()) {
      Path dst = new Path(target, name);
      // delete, then rename: Hadoop's rename does not replace a file (readers see the old file,
      // none, or the new one, never part of one, where renaming a file is atomic)
      raw.delete(dst, false);
      if (!raw.rename(hidden(name), dst)) {
        throw new IOException("could not rename " + hidden(name) + " to " + dst);
      }
    }
    committed = true;
    for (FileStatus s : fs.listStatus(target)) {
      String n = s.getPath().getName();
      if (!files.containsKey(n) && !n.equals(LOCK) && !n.equals(generation)) {
        fs.delete(s.getPath(), true);
      }
    }
  }

  /** Deletes this run's generation and files unless committed, and releases the lock. */
  @Override
  public void close() {
    try {
      if (!committed) {
        fs.delete(new Path(target, generation), true);
        for (String f : files.keySet()) {
          fs.delete(hidden(f), false);
        }
      }
    } catch (IOException e) {
      // best effort: a later run on this directory deletes what is left
    }
    try {
      if (locked && runId.equals(lockHolder())) {
        fs.delete(new Path(target, LOCK), false);
      }
      locked = false;
      if (!committed && createdTarget && fs.listStatus(target).length == 0) {
        fs.delete(target, false);
      }
    } catch (IOException e) {
      // best effort: the lock names this run
    }
  }

  /** The hidden temporary name of top-level file {@code name} while this run commits it. */
  private Path hidden(String name) {
    return new Path(target, "." + name + ".tmp-" + runId);
  }

  private void lock(String path) throws IOException {
    Path lock = new Path(target, LOCK);
    byte[] text = (runId + " " + Instant.now() + "\n").getBytes(StandardCharsets.UTF_8);
    FileSystem raw = raw();
    try {
      if (raw instanceof RawLocalFileSystem local) {
        // the local file system's create checks, then creates: O_EXCL is what excludes
        Files.write(local.pathToFile(lock).toPath(), text, StandardOpenOption.CREATE_NEW);
      } else {
        // atomic where the file system's create-if-absent is (HDFS); checkLock narrows the rest
        try (OutputStream os = raw.create(lock, false)) {
          os.write(text);
        }
      }
      locked = true;
    } catch (FileAlreadyExistsException | java.nio.file.FileAlreadyExistsException e) {
      throw locked(path);
    } catch (IOException e) {
      if (fs.exists(lock)) {
        throw locked(path);
      }
      throw e;
    }
  }

  private IllegalArgumentException locked(String path) throws IOException {
    String holder = lockText();
    return new IllegalArgumentException(
        "output "
            + path
            + " is being written by another moeprep run ("
            + (holder == null ? "lock" : "run " + holder.trim())
            + "): wait for it to finish, or delete "
            + new Path(path, LOCK)
            + " if that run is dead");
  }

  private void checkLock() throws IOException {
    String holder = lockHolder();
    if (!runId.equals(holder)) {
      throw new IllegalStateException(
          "output "
              + target
              + " was taken by another moeprep run ("
              + (holder == null ? "no lock" : "run " + holder)
              + ") while this one ran: this run's output is discarded");
    }
  }

  /** The run id in the lock file, or null when there is none. */
  private String lockHolder() throws IOException {
    String t = lockText();
    if (t == null) {
      return null;
    }
    String s = t.trim();
    int sp = s.indexOf(' ');
    return sp < 0 ? s : s.substring(0, sp);
  }

  private String lockText() throws IOException {
    try (InputStream in = raw().open(new Path(target, LOCK))) {
      ByteArrayOutputStream b = new ByteArrayOutputStream();
      in.transferTo(b);
      return b.toString(StandardCharsets.UTF_8);
    } catch (FileNotFoundException e) {
      return null;
    }
  }

  private boolean hasOtherContent() throws IOException {
    List<String> other = new ArrayList<>();
    for (FileStatus s : fs.listStatus(target)) {
      if (!s.getPath().getName().equals(LOCK)) {
        other.add(s.getPath().getName());
      }
    }
    return !other.isEmpty();
  }

  /** The raw file system: no .crc files beside the manifests, the chart and the lock. */
  private FileSystem raw() {
    return fs instanceof ChecksumFileSystem c ? c.getRawFileSystem() : fs;
  }
}
