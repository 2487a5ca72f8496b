package io.moeprep.spark.spec;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.spark.conf.MoePrepConf;
import java.io.Serializable;
import java.util.function.Function;

/**
 * The kernels' internal tuning as the job carries it ({@code spark.moeprep.internal.*}), read on
 * the driver and turned into the kernels' {@link KernelTuning} where the backend is chosen, so that
 * "every core" means the cores of the executor that runs the kernels.
 *
 * @param cpuThreads worker threads of the CPU backend, or {@code 0} for one per core
 * @param fusedMap build the routing maps with the fused single-launch kernel
 * @param fusedMinBlockSlots fewest slots per block of the fused map kernel (a power of two)
 * @param fusedTaggedCells most cells the fused map kernel sums without a grid barrier
 * @param syncLaunches synchronise after every launch (debugging)
 * @param failLaunch fault injection: the kernel name prefix whose launches fail, or empty
 */
public record TuningSettings(
    int cpuThreads,
    boolean fusedMap,
    long fusedMinBlockSlots,
    long fusedTaggedCells,
    boolean syncLaunches,
    String failLaunch)
    implements Serializable {

  /** The internal entries of a configuration ({@code key -> value or null}). */
  public static TuningSettings read(Function<String, String> conf) {
    return new TuningSettings(
        MoePrepConf.CPU_THREADS.readFrom(conf),
        MoePrepConf.CUDA_FUSED_MAP.readFrom(conf),
        MoePrepConf.CUDA_FUSED_MIN_BLOCK_SLOTS.readFrom(conf),
        MoePrepConf.CUDA_FUSED_TAGGED_CELLS.readFrom(conf),
        MoePrepConf.CUDA_SYNC_LAUNCHES.readFrom(conf),
        MoePrepConf.CUDA_FAIL_LAUNCH.readFrom(conf));
  }

  /** The kernels' tuning in this JVM ({@code cpuThreads = 0}: its available processors). */
  public KernelTuning kernelTuning() {
    return new KernelTuning(
        cpuThreads == 0 ? Runtime.getRuntime().availableProcessors() : cpuThreads,
        fusedMap,
        fusedMinBlockSlots,
        fusedTaggedCells,
        syncLaunches,
        failLaunch.isEmpty() ? null : failLaunch);
  }
}
