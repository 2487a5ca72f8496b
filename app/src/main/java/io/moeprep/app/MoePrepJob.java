package io.moeprep.app;

import io.moeprep.app.job.JobMain;
import org.apache.spark.SparkConf;
import org.apache.spark.sql.SparkSession;

/**
 * MoePrep's main job: {@code generate}, {@code permute}, {@code unpermute}, {@code verify}, {@code
 * stats} and {@code demo}. Run it with {@code spark-submit --class io.moeprep.app.MoePrepJob
 * moeprep-app.jar demo}, or {@code bin/moeprep demo} (local mode, no Spark installation). Without
 * {@code spark.master} it runs in local mode on all cores.
 */
public final class MoePrepJob {
  private MoePrepJob() {}

  /** Runs the job and exits with its code (see {@link JobMain}). */
  public static void main(String[] args) {
    SparkSession[] created = new SparkSession[1];
    int code =
        JobMain.run(
            args,
            System.out,
            System.err,
            () -> {
              SparkConf conf = new SparkConf();
              SparkSession.Builder b =
                  SparkSession.builder().appName("moeprep " + (args.length > 0 ? args[0] : ""));
              if (!conf.contains("spark.master")) {
                b.master("local[*]");
              }
              created[0] = b.getOrCreate();
              return created[0];
            });
    if (created[0] != null) {
      created[0].stop();
    }
    System.exit(code);
  }
}
