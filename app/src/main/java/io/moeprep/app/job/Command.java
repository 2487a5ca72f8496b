package io.moeprep.app.job;

import java.util.Set;
import java.util.function.Function;

/**
 * A subcommand: its name, help text and options, and how to build it from parsed options. Building
 * checks every option before Spark starts, so a usage error costs no start-up time.
 */
record Command(
    String name,
    String summary,
    String usage,
    Set<String> options,
    Set<String> flags,
    Function<Args, Runner> factory) {

  /** A subcommand ready to run. */
  interface Runner {
    /** Runs; returns the exit code. */
    int run(JobContext ctx) throws Exception;
  }
}
