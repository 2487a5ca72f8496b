package io.moeprep.app.job;

import java.io.IOException;
import org.apache.hadoop.conf.Configuration;

/**
 * A subcommand of the main job: a picocli {@code @Command} whose options are checked before Spark
 * starts ({@link #validate()}, then {@link #checkPaths}), so that a usage error or a wrong path
 * costs no start-up time, and then run with a session.
 */
interface JobCommand {
  /**
   * Checks the options on their own (ranges, combinations), touching no file.
   *
   * @throws IllegalArgumentException naming the option to fix
   */
  default void validate() {}

  /**
   * Checks the paths that the command reads and writes, before Spark starts: inputs exist, outputs
   * do not (unless {@code --force}).
   *
   * @param hadoop the configuration of the job's file systems
   * @throws IllegalArgumentException naming the option to fix
   */
  default void checkPaths(Configuration hadoop) throws IOException {}

  /**
   * Runs with a session (after {@link #validate()} and {@link #checkPaths}).
   *
   * @return the exit code
   */
  int run(JobContext ctx) throws Exception;
}
