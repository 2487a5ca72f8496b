package io.moeprep.spark;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.TuningSettings;
import java.util.Map;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.resource.ResourceInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Executor start-up: probes the GPU once, loads the CUDA kernels when it can run them, records the
 * GPU Spark assigned to this executor, and registers the metrics. Every step catches everything: a
 * CPU-only executor always starts.
 */
final class MoePrepExecutorPlugin implements ExecutorPlugin {
  private static final Logger LOG = LoggerFactory.getLogger(MoePrepExecutorPlugin.class);

  @Override
  public void init(PluginContext ctx, Map<String, String> extraConf) {
    try {
      ExecutorRuntime.registerMetrics(ctx.metricRegistry());
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
}
