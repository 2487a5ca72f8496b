package io.moeprep.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.codahale.metrics.Gauge;
import com.codahale.metrics.MetricRegistry;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.Map;
import org.apache.spark.SparkConf;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.resource.ResourceInformation;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The executor plugin sizes the host block cache from the executor's memory settings, reports it in
 * the hostCacheBytes metric, and leaves no off-heap memory allocated once shut down.
 */
class MoePrepExecutorPluginTest {
  private static final long MIB = 1L << 20;

  @AfterEach
  void restoreTheDefaultLimit() {
    HostBuffer.setCacheLimit(HostBuffer.DEFAULT_CACHE_LIMIT);
  }

  private static PluginContext context(SparkConf conf, MetricRegistry metrics) {
    return new PluginContext() {
      @Override
      public MetricRegistry metricRegistry() {
        return metrics;
      }

      @Override
      public SparkConf conf() {
        return conf;
      }

      @Override
      public String executorID() {
        return "7";
      }

      @Override
      public String hostname() {
        return "127.0.0.1";
      }

      @Override
      public Map<String, ResourceInformation> resources() {
        return Map.of();
      }

      @Override
      public void send(Object message) {}

      @Override
      public Object ask(Object message) {
        return null;
      }
    };
  }

  @Test
  void theCacheLimitComesFromTheMemoryOverhead() {
    SparkConf c = new SparkConf(false);
    assertEquals(96 * MIB, MoePrepExecutorPlugin.hostCacheLimit(c), "25% of Spark's 384m floor");
    c.set("spark.executor.memory", "8g");
    assertEquals(
        (long) (0.25 * (long) (0.1 * 8192) * MIB),
        MoePrepExecutorPlugin.hostCacheLimit(c),
        "25% of 10% of the executor memory");
    c.set("spark.executor.memoryOverhead", "2000"); // MiB, as Spark reads it
    assertEquals(500 * MIB, MoePrepExecutorPlugin.hostCacheLimit(c));
    c.set("spark.moeprep.memory.hostCacheFraction", "1");
    assertEquals(2000 * MIB, MoePrepExecutorPlugin.hostCacheLimit(c));
    c.set("spark.executor.memoryOverhead", "64g");
    assertEquals(HostBuffer.DEFAULT_CACHE_LIMIT, MoePrepExecutorPlugin.hostCacheLimit(c));
    c.set("spark.moeprep.memory.hostCacheFraction", "0");
    assertEquals(0, MoePrepExecutorPlugin.hostCacheLimit(c), "0 turns the cache off");
  }

  @Test
  @SuppressWarnings("unchecked")
  void aStoppedPluginLeavesNothingAllocated() {
    long inUse = HostBuffer.bytesInUse();
    long live = HostBuffer.liveBuffers();
    SparkConf conf =
        new SparkConf(false)
            .set("spark.executor.memoryOverhead", "64m")
            .set("spark.moeprep.memory.hostCacheFraction", "0.5");
    MetricRegistry metrics = new MetricRegistry();
    MoePrepExecutorPlugin plugin = new MoePrepExecutorPlugin();
    plugin.init(context(conf, metrics), Map.of());
    assertEquals(32 * MIB, HostBuffer.cacheLimit(), "half of the 64m overhead");
    Gauge<Long> cached = (Gauge<Long>) metrics.getGauges().get("hostCacheBytes");

    HostBuffer.trimCache();
    HostBuffer a = HostBuffer.allocate(8 * MIB);
    HostBuffer b = HostBuffer.allocate(8 * MIB);
    a.close();
    b.close();
    assertEquals(16 * MIB, cached.getValue(), "the closed blocks are cached and reported");
    for (int i = 0; i < 6; i++) {
      HostBuffer.allocate(8 * MIB).close();
    }
    HostBuffer[] many = new HostBuffer[6];
    for (int i = 0; i < many.length; i++) {
      many[i] = HostBuffer.allocate(8 * MIB);
    }
    for (HostBuffer h : many) {
      h.close();
    }
    assertEquals(32 * MIB, cached.getValue(), "never more than the limit");

    plugin.shutdown();
    assertEquals(0, HostBuffer.cachedBytes(), "no cached block after shutdown");
    assertEquals(0L, cached.getValue());
    assertEquals(inUse, HostBuffer.bytesInUse(), "no buffer left open");
    assertEquals(live, HostBuffer.liveBuffers());
    HostBuffer.allocate(8 * MIB).close();
    assertEquals(0, HostBuffer.cachedBytes(), "a buffer closed after shutdown is freed");
  }
}
