package io.moeprep.spark;

import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.SparkPlugin;

/**
 * MoePrep's Spark plugin ({@code spark.plugins=io.moeprep.spark.MoePrepPlugin}). The executor side
 * probes the GPU once, picks the device from Spark's resource scheduling and registers the metrics;
 * nothing it does can fail a CPU-only executor.
 */
public final class MoePrepPlugin implements SparkPlugin {
  @Override
  public DriverPlugin driverPlugin() {
    return new MoePrepDriverPlugin();
  }

  @Override
  public ExecutorPlugin executorPlugin() {
    return new MoePrepExecutorPlugin();
  }
}
