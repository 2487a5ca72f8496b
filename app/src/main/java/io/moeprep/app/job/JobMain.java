package io.moeprep.app.job;

import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.MoePrepCommandLine;
import io.moeprep.spark.conf.MoePrepConf;
import java.io.PrintStream;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Supplier;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.SparkSession;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

/**
 * The main job's command line ({@link io.moeprep.app.MoePrepJob}): the {@code moeprep} command and
 * its subcommands. Exit codes ({@link MoePrepCommandLine}): 0 done, 2 usage or bad input (one line
 * on stderr naming the option to fix; no output left behind) or Spark unavailable, 1 a verification
 * mismatch or any other failure. Options and paths are checked before Spark starts.
 */
@Command(
    name = "moeprep",
    customSynopsis = "moeprep <command> [options]    (moeprep <command> --help for its options)",
    description = "MoePrep's main job: mixture-of-experts permute/unpermute per EP rank on Spark.",
    footer =
        "Run with bin/moeprep (Spark local mode, jars from Maven) or spark-submit --class"
            + " io.moeprep.app.MoePrepJob.",
    subcommands = {
      GenerateCommand.class,
      PermuteCommand.class,
      UnpermuteCommand.class,
      VerifyCommand.class,
      StatsCommand.class,
      DemoCommand.class
    })
public final class JobMain {
  private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(JobMain.class);

  /** The version written in manifests. */
  static final String VERSION = "0.1.0";

  @Mixin HelpOption help;

  JobMain() {}

  /**
   * Runs a command line; returns the exit code.
   *
   * @param session the Spark session to use, asked for only once the options and paths are valid
   */
  public static int run(
      String[] args, PrintStream out, PrintStream err, Supplier<SparkSession> session) {
    MoePrepCommandLine cli =
        new MoePrepCommandLine(
            new JobMain(), out, err, true, MoePrepCommandLine.verboseFromEnvironment());
    return cli.execute(
        args, spec -> execute(spec.name(), (JobCommand) spec.userObject(), out, err, session));
  }

  private static int execute(
      String name, JobCommand cmd, PrintStream out, PrintStream err, Supplier<SparkSession> session)
      throws Exception {
    cmd.validate();
    checkSettings();
    cmd.checkPaths(hadoopConfiguration());
    long checked = System.nanoTime();
    SparkSession spark;
    try {
      spark = session.get();
    } catch (RuntimeException e) {
      throw new MoePrepCommandLine.Unavailable(
          "Spark did not start: " + MoePrepCommandLine.firstLine(e.getMessage()), e);
    }
    Progress progress = new Progress(err, name, 3000, spark.sparkContext());
    spark.sparkContext().addSparkListener(progress);
    long started = System.nanoTime();
    try {
      return cmd.run(new JobContext(spark, out, err, progress));
    } catch (AnalysisException e) {
      // a missing column or table, a path Spark cannot read: the input's, not ours
      throw new IllegalArgumentException(e.getMessage(), e);
    } finally {
      spark.sparkContext().removeSparkListener(progress);
      // where a command's seconds go (logger io.moeprep.app.job.JobMain at debug)
      LOG.debug(
          "moeprep {}: JVM start to checks done {} s, Spark session {} s, command {} s",
          name,
          String.format(
              java.util.Locale.ROOT,
              "%.2f",
              java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime() / 1e3
                  - (System.nanoTime() - checked) / 1e9),
          String.format(java.util.Locale.ROOT, "%.2f", (started - checked) / 1e9),
          String.format(java.util.Locale.ROOT, "%.2f", (System.nanoTime() - started) / 1e9));
    }
  }

  /**
   * Checks the {@code spark.moeprep.*} settings given to the JVM as system properties (as
   * spark-submit's {@code --conf} and bin/moeprep's {@code -D} pass them) against MoePrep's typed
   * entries, before Spark starts: a bad value is the user's to fix, not a failure of SparkContext.
   *
   * @throws IllegalArgumentException naming the key, the value and what it must be
   */
  static void checkSettings() {
    Map<String, String> settings = new TreeMap<>();
    for (String key : System.getProperties().stringPropertyNames()) {
      settings.put(key, System.getProperty(key));
    }
    MoePrepConf.checkAll(settings);
  }

  /**
   * The Hadoop configuration of the file systems before the session exists: the defaults on the
   * class path plus the {@code spark.hadoop.*} settings given to the JVM as system properties (as
   * spark-submit and bin/moeprep pass them, and as the session's configuration will have them).
   */
  static Configuration hadoopConfiguration() {
    Configuration c = new Configuration();
    String prefix = "spark.hadoop.";
    for (String key : System.getProperties().stringPropertyNames()) {
      if (key.startsWith(prefix)) {
        c.set(key.substring(prefix.length()), System.getProperty(key));
      }
    }
    return c;
  }
}
