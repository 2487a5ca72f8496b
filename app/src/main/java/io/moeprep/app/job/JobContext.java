package io.moeprep.app.job;

import java.io.PrintStream;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.SparkSession;

/** What a running subcommand uses: the session, the output streams and the progress reporter. */
final class JobContext {
  final SparkSession spark;
  final PrintStream out;
  final PrintStream err;
  final Progress progress;

  JobContext(SparkSession spark, PrintStream out, PrintStream err, Progress progress) {
    this.spark = spark;
    this.out = out;
    this.err = err;
    this.progress = progress;
  }

  Configuration hadoop() {
    return spark.sparkContext().hadoopConfiguration();
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
