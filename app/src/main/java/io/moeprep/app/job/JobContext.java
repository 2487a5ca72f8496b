package io.moeprep.app.job;

import java.io.IOException;
import java.io.PrintStream;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/** What a running subcommand uses: the session, the output streams and the progress reporter. */
final class JobContext {
  final SparkSession spark;
  final PrintStream out;
  final PrintStream err;
  final Progress progress;

  /** Whether the command ends with its summary line of counters (the demo has its own). */
  final boolean summary;

  JobContext(SparkSession spark, PrintStream out, PrintStream err, Progress progress) {
    this(spark, out, err, progress, true);
  }

  JobContext(
      SparkSession spark, PrintStream out, PrintStream err, Progress progress, boolean summary) {
    this.spark = spark;
    this.out = out;
    this.err = err;
    this.progress = progress;
    this.summary = summary;
  }

  Configuration hadoop() {
    return spark.sparkContext().hadoopConfiguration();
  }

  /** The schema of a permute's {@code data} in {@code layout}. */
  static StructType dataSchema(io.moeprep.spark.spec.Layout layout) {
    return layout == io.moeprep.spark.spec.Layout.PACKED
        ? io.moeprep.spark.spec.Schemas.PACKED
        : io.moeprep.spark.spec.Schemas.ROWS;
  }

  /** The schema of unpermute's {@code combined}: the combined rows and their {@code ep_rank}. */
  static final StructType COMBINED =
      io.moeprep.spark.spec.Schemas.COMBINED.add(
          "ep_rank", org.apache.spark.sql.types.DataTypes.IntegerType, true);

  /**
   * A Parquet table that MoePrep wrote, read as Spark reads it; an empty table when the directory
   * holds no data file. An empty output partitioned by {@code ep_rank} has no file (there is no
   * partition to write one into), and Spark cannot infer a schema from no file: {@code schema} is
   * the table's, partition columns included.
   */
  Dataset<Row> table(String path, StructType schema) throws IOException {
    if (!hasDataFile(hadoop(), path)) {
      // as Spark reads a partitioned table: the partition column last
      StructType s = new StructType();
      for (StructField f : schema.fields()) {
        if (!f.name().equals("ep_rank")) {
          s = s.add(f);
        }
      }
      if (s.length() < schema.length()) {
        s = s.add(schema.apply("ep_rank"));
      }
      return spark.createDataFrame(List.<Row>of(), s);
    }
    return spark.read().parquet(path);
  }

  /**
   * True when {@code path} or a directory below it holds a file that is not hidden ({@code _x,
   * .x}).
   */
  static boolean hasDataFile(Configuration hadoop, String path) throws IOException {
    Path p = new Path(path);
    FileSystem fs = p.getFileSystem(hadoop);
    if (!fs.exists(p)) {
      return true; // Spark's own error names the missing path
    }
    return !visibleFiles(fs, p, 1).isEmpty();
  }

  /**
   * Up to {@code limit} files under {@code root}, at any depth, none of them or of their
   * directories below {@code root} hidden ({@code _x}, {@code .x}: staging, markers, checksums).
   * Walks with {@code listStatus}, which every Hadoop file system answers alike.
   */
  static List<Path> visibleFiles(FileSystem fs, Path root, int limit) throws IOException {
    List<Path> out = new java.util.ArrayList<>();
    java.util.ArrayDeque<Path> todo = new java.util.ArrayDeque<>(List.of(root));
    while (!todo.isEmpty() && out.size() < limit) {
      for (org.apache.hadoop.fs.FileStatus s : fs.listStatus(todo.pop())) {
        String n = s.getPath().getName();
        if (n.startsWith("_") || n.startsWith(".")) {
          continue;
        }
        if (s.isDirectory()) {
          todo.push(s.getPath());
        } else if (out.size() < limit) {
          out.add(s.getPath());
        }
      }
    }
    return out;
  }

  /**
   * The number and total size in bytes of the files under {@code path} that {@link #visibleFiles}
   * finds (data files, no checksums or markers), for a command's summary line.
   */
  static long[] filesAndBytes(Configuration hadoop, String path) throws IOException {
    Path root = new Path(path);
    FileSystem fs = root.getFileSystem(hadoop);
    long bytes = 0;
    List<Path> files = visibleFiles(fs, root, Integer.MAX_VALUE);
    for (Path f : files) {
      bytes += fs.getFileStatus(f).getLen();
    }
    return new long[] {files.size(), bytes};
  }

  /**
   * Fails with the option to fix when {@code path} does not exist on its file system (of {@code
   * hadoop}'s configuration).
   */
  static void requireExists(Configuration hadoop, String path, String option)
      throws java.io.IOException {
    org.apache.hadoop.fs.Path p = new org.apache.hadoop.fs.Path(path);
    if (!p.getFileSystem(hadoop).exists(p)) {
      throw new IllegalArgumentException(option + " " + path + " does not exist: fix " + option);
    }
  }
}
