package io.moeprep.spark;

import org.apache.spark.sql.SparkSession;

/** One local[2] session for the whole test JVM, with the plugin and the SQL extensions loaded. */
public final class SparkSessions {
  private static SparkSession session;

  private SparkSessions() {}

  /** The shared session. */
  public static synchronized SparkSession local() {
    if (session == null) {
      session =
          SparkSession.builder()
              .master("local[2]")
              .appName("moeprep-tests")
              .config("spark.ui.enabled", "false")
              .config("spark.driver.host", "127.0.0.1")
              .config("spark.driver.bindAddress", "127.0.0.1")
              .config("spark.sql.shuffle.partitions", "3")
              .config("spark.plugins", MoePrepPlugin.class.getName())
              .config("spark.sql.extensions", MoePrepExtensions.class.getName())
              .config("spark.moeprep.backend", "cpu")
              .config("spark.storage.exceptionOnPinLeak", "true")
              .getOrCreate();
      session.sparkContext().setLogLevel("WARN");
    }
    return session;
  }
}
