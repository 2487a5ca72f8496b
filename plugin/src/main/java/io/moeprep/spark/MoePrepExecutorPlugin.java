package io.moeprep.spark;

import com.codahale.metrics.Gauge;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.conf.MoePrepConf;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.TuningSettings;
import java.util.Map;
import org.apache.spark.SparkConf;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.network.util.JavaUtils;
import org.apache.spark.resource.ResourceInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Executor start-up: sizes the host block cache from the executor's memory settings, probes the GPU
 * once, loads the CUDA kernels when it can run them, records the GPU Spark assigned to this
 * executor, and registers the metrics. Every step catches everything: a CPU-only executor always
 * starts. Shutdown frees the host block cache.
 */
final class MoePrepExecutorPlugin implements ExecutorPlugin {
  private static final Logger LOG = LoggerFactory.getLogger(MoePrepExecutorPlugin.class);

  /** Spark's own floor and default factor of {@code spark.executor.memoryOverhead}. */
  private static final long MIN_OVERHEAD_MIB = 384;

  private static final double DEFAULT_OVERHEAD_FACTOR = 0.10;

  /** The host block cache's limit never exceeds the kernels' default. */
  private static final long MAX_HOST_CACHE = HostBuffer.DEFAULT_CACHE_LIMIT;

  /**
   * The limit of the host block cache for an executor of {@code conf}: {@link
   * MoePrepConf#HOST_CACHE_FRACTION} of its memory overhead ({@code spark.executor.memoryOverhead},
   * MiB unless a unit is given, else Spark's default {@code max(384m, memoryOverheadFactor x
   * spark.executor.memory)}), at most {@link HostBuffer#DEFAULT_CACHE_LIMIT}.
   */
  static long hostCacheLimit(SparkConf conf) {
    double fraction = MoePrepConf.HOST_CACHE_FRACTION.readFrom(k -> conf.get(k, null));
    long overheadMib;
    String overhead = conf.get("spark.executor.memoryOverhead", null);
    if (overhead != null) {
      overheadMib = JavaUtils.byteStringAsMb(overhead);
    } else {
      long memoryMib = JavaUtils.byteStringAsMb(conf.get("spark.executor.memory", "1g"));
      double factor =
          Double.parseDouble(
              conf.get(
                  "spark.executor.memoryOverheadFactor", Double.toString(DEFAULT_OVERHEAD_FACTOR)));
      overheadMib = Math.max(MIN_OVERHEAD_MIB, (long) (factor * memoryMib));
    }
    return Math.min(MAX_HOST_CACHE, (long) (fraction * (overheadMib << 20)));
  }

  @Override
  public void init(PluginContext ctx, Map<String, String> extraConf) {
    try {
      long limit = hostCacheLimit(ctx.conf());
      HostBuffer.setCacheLimit(limit);
      LOG.info("moeprep: host block cache of at most {} bytes", limit);
    } catch (IllegalArgumentException e) { // a bad value is the user's to fix: say it, start
      LOG.warn("moeprep: host block cache left at {} bytes: {}", HostBuffer.cacheLimit(), e);
    }
    try {
      ExecutorRuntime.registerMetrics(ctx.metricRegistry());
      ctx.metricRegistry().register("hostCacheBytes", (Gauge<Long>) HostBuffer::cachedBytes);
    } catch (Throwable t) { // metrics are optional; the executor must start
      LOG.warn("moeprep: could not register metrics", t);
    }
    try {
      ResourceInformation gpu = ctx.resources().get("gpu");
      if (gpu != null && gpu.addresses().length > 0) {
        ExecutorRuntime.useExecutorDevice(Integer.parseInt(gpu.addresses()[0].trim()));
      }
    } catch (Throwable t) {
      LOG.warn("moeprep: could not read the executor's gpu resource", t);
    }
    try {
      CudaSupport.Probe p = ExecutorRuntime.probe();
      if (p.available()) {
        // loads the module once, tuned as the executor's configuration says
        ExecutorRuntime.kernels(
            BackendChoice.AUTO,
            TuningSettings.read(k -> ctx.conf().get(k, null)),
            ExecutorRuntime.executorDevice());
      }
      if (p.available()) {
        LOG.info(
            "moeprep: executor {}: GPU available ({}), device {}",
            ctx.executorID(),
            p.reason(),
            ExecutorRuntime.executorDevice());
      } else {
        // said once, where backend auto falls back (Backends), or in the error of backend cuda
        LOG.debug("moeprep: executor {}: GPU unavailable ({})", ctx.executorID(), p.reason());
      }
    } catch (Throwable t) {
      LOG.warn("moeprep: the GPU probe failed; tasks run on the CPU", t);
    }
  }

  /**
   * Frees the host block cache and turns it off: an executor that stops (or a session that stops in
   * local mode) leaves no cached off-heap memory behind. Buffers still open are their owners' to
   * close; once closed they are freed, not cached.
   */
  @Override
  public void shutdown() {
    HostBuffer.setCacheLimit(0);
    HostBuffer.trimCache();
  }
}
