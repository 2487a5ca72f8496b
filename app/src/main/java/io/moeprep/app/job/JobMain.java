package io.moeprep.app.job;

import java.io.PrintStream;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Supplier;
import org.apache.spark.sql.SparkSession;

/**
 * The main job's command line ({@link io.moeprep.app.MoePrepJob}). Exit codes: 0 done, 2 usage or
 * bad input (one line on stderr naming the option to fix; no output left behind), 1 a verification
 * mismatch or any other failure.
 */
public final class JobMain {
  /** The version written in manifests. */
  static final String VERSION = "0.1.0";

  static final Map<String, Command> COMMANDS = new LinkedHashMap<>();

  static {
    for (Command c :
        new Command[] {
          GenerateCommand.COMMAND,
          PermuteCommand.COMMAND,
          UnpermuteCommand.COMMAND,
          VerifyCommand.COMMAND,
          StatsCommand.COMMAND,
          DemoCommand.COMMAND
        }) {
      COMMANDS.put(c.name(), c);
    }
  }

  private JobMain() {}

  /** The top-level help. */
  static String usage() {
    StringBuilder b = new StringBuilder();
    b.append(
        "usage: moeprep <command> [options]    (moeprep <command> --help for its options)\n\n");
    b.append("MoePrep's main job: mixture-of-experts permute/unpermute per EP rank on Spark.\n\n");
    b.append("commands:\n");
    for (Command c : COMMANDS.values()) {
      b.append(String.format("  %-10s %s%n", c.name(), c.summary()));
    }
    b.append(
        "\nRun with bin/moeprep (Spark local mode, jars from Maven) or spark-submit --class"
            + " io.moeprep.app.MoePrepJob.\n");
    return b.toString();
  }

  /**
   * Runs a command line; returns the exit code.
   *
   * @param session the Spark session to use, asked for only once the options are valid
   */
  public static int run(
      String[] args, PrintStream out, PrintStream err, Supplier<SparkSession> session) {
    if (args.length == 0) {
      err.print(usage());
      return 2;
    }
    if (args[0].equals("--help") || args[0].equals("-h") || args[0].equals("help")) {
      out.print(usage());
      return 0;
    }
    Command cmd = COMMANDS.get(args[0]);
    if (cmd == null) {
      err.println(
          "moeprep: error: command '"
              + args[0]
              + "' is unknown: must be one of "
              + String.join(", ", COMMANDS.keySet())
              + " (see moeprep --help)");
      return 2;
    }
    Command.Runner runner;
    try {
      Args a = Args.parse(cmd.name(), args, 1, cmd.options(), cmd.flags());
      if (a.help()) {
        out.print(cmd.usage());
        return 0;
      }
      runner = cmd.factory().apply(a);
    } catch (IllegalArgumentException e) {
      err.println("moeprep " + cmd.name() + ": error: " + e.getMessage());
      return 2;
    }
    return execute(cmd.name(), runner, out, err, session);
  }

  static int execute(
      String name,
      Command.Runner runner,
      PrintStream out,
      PrintStream err,
      Supplier<SparkSession> session) {
    SparkSession spark;
    try {
      spark = session.get();
    } catch (RuntimeException e) {
      err.println("moeprep " + name + ": failed: Spark did not start: " + oneLine(e));
      return 1;
    }
    Progress progress = new Progress(err, name, 3000, spark.sparkContext());
    spark.sparkContext().addSparkListener(progress);
    try {
      return runner.run(new JobContext(spark, out, err, progress));
    } catch (Throwable t) {
      IllegalArgumentException bad = badInput(t);
      if (bad != null) {
        err.println("moeprep " + name + ": error: " + oneLine(bad));
        debug(t, err);
        return 2;
      }
      err.println(
          "moeprep " + name + ": failed: " + oneLine(root(t)) + " (MOEPREP_VERBOSE=1 shows more)");
      debug(t, err);
      return 1;
    } finally {
      spark.sparkContext().removeSparkListener(progress);
    }
  }

  private static void debug(Throwable t, PrintStream err) {
    if ("1".equals(System.getenv("MOEPREP_VERBOSE"))) {
      t.printStackTrace(err);
    }
  }

  /** The first caller-input error in the cause chain (Spark wraps task failures). */
  static IllegalArgumentException badInput(Throwable t) {
    for (Throwable c = t; c != null; c = c.getCause()) {
      if (c instanceof IllegalArgumentException e && !(e instanceof NumberFormatException)) {
        return e;
      }
      if (c.getCause() == c) {
        break;
      }
    }
    if (t instanceof org.apache.spark.sql.AnalysisException a) {
      return new IllegalArgumentException(a.getMessage(), a);
    }
    return null;
  }

  private static Throwable root(Throwable t) {
    Throwable c = t;
    while (c.getCause() != null && c.getCause() != c) {
      c = c.getCause();
    }
    return c;
  }

  static String oneLine(Throwable t) {
    String m = t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
    if (!(t instanceof IllegalArgumentException) && t.getMessage() != null) {
      m = t.getClass().getSimpleName() + ": " + m;
    }
    int nl = m.indexOf('\n');
    return nl < 0 ? m : m.substring(0, nl);
  }
}
