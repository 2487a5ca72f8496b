package io.moeprep.spark.spec;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.conf.MoePrepConf;
import java.io.Serializable;
import java.util.function.Function;

/**
 * How a permute or unpermute runs, as opposed to what it computes ({@link ProblemShape}): read once
 * from the typed configuration ({@link MoePrepConf}), where the settings given in code or as data
 * source options take the place of the session's.
 *
 * @param layout the output layout
 * @param dispatch which tokens each rank receives, and with which routing
 * @param partitioning how the work is laid out over Spark partitions
 * @param batchPartitions partitions of the shuffle by batch under {@link Partitioning#BATCH}
 *     ({@code 0}: {@code spark.sql.shuffle.partitions})
 * @param backend the kernel backend ({@code auto} becomes {@code cuda} under {@code
 *     spark.moeprep.gpu.required=true})
 * @param maxBlockBytes the largest PACKED hidden block, in bytes
 * @param chunkBytes hidden bytes per dispatch chunk
 * @param combinePartitions partitions of the combine stage ({@code 0}: {@code
 *     spark.sql.shuffle.partitions})
 * @param badRows what happens to an input row that fails validation
 * @param gpuMemoryLimit device memory cap of MoePrep per GPU and executor, in bytes ({@code 0}:
 *     none)
 * @param oomFallback whether a batch that runs out of device memory runs again on the CPU
 * @param tuning the kernels' internal tuning
 */
public record RunSettings(
    Layout layout,
    Dispatch dispatch,
    Partitioning partitioning,
    int batchPartitions,
    BackendChoice backend,
    long maxBlockBytes,
    long chunkBytes,
    int combinePartitions,
    BadRowPolicy badRows,
    long gpuMemoryLimit,
    boolean oomFallback,
    TuningSettings tuning)
    implements Serializable {

  /** The settings of a configuration ({@code key -> value or null}; unset keys: the defaults). */
  public static RunSettings read(Function<String, String> conf) {
    BackendChoice backend = BackendChoice.parse(MoePrepConf.BACKEND.readFrom(conf));
    if (backend == BackendChoice.AUTO && MoePrepConf.GPU_REQUIRED.readFrom(conf)) {
      backend = BackendChoice.CUDA; // the GPU is required: no silent fallback
    }
    return new RunSettings(
        Layout.parse(MoePrepConf.LAYOUT.readFrom(conf)),
        Dispatch.parse(MoePrepConf.DISPATCH.readFrom(conf)),
        Partitioning.parse(MoePrepConf.PARTITIONING.readFrom(conf)),
        MoePrepConf.BATCH_PARTITIONS.readFrom(conf),
        backend,
        MoePrepConf.PACKED_MAX_BLOCK_BYTES.readFrom(conf),
        MoePrepConf.DISPATCH_CHUNK_BYTES.readFrom(conf),
        MoePrepConf.COMBINE_PARTITIONS.readFrom(conf),
        BadRowPolicy.parse(MoePrepConf.BAD_ROWS.readFrom(conf)),
        MoePrepConf.GPU_MEMORY_LIMIT.readFrom(conf),
        MoePrepConf.GPU_OOM_FALLBACK.readFrom(conf),
        TuningSettings.read(conf));
  }
}
