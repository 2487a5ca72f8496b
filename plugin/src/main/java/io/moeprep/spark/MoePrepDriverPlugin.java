package io.moeprep.spark;

import io.moeprep.spark.conf.ConfigEntry;
import io.moeprep.spark.conf.MoePrepConf;
import java.util.Map;
import org.apache.spark.SparkContext;
import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.PluginContext;

/** Checks every {@code spark.moeprep.*} setting at start-up, so a bad value fails early. */
final class MoePrepDriverPlugin implements DriverPlugin {
  @Override
  public Map<String, String> init(SparkContext sc, PluginContext ctx) {
    for (ConfigEntry<?> e : MoePrepConf.ALL) {
      e.readFrom(k -> sc.conf().get(k, null));
    }
    return Map.of();
  }
}
