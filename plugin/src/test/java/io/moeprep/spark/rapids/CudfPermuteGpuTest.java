package io.moeprep.spark.rapids;

import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.testing.GpuTests;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The cudf route itself on a GPU: cudf tables built on the device, their hidden and expert_ids
 * child buffers permuted in place by the CUDA kernels, the outputs cudf tables in RMM memory,
 * compared byte for byte with the CPU backend, with no host copy of the hidden data in between (the
 * output hidden columns are checked to be slices of one device buffer). No Spark: it runs from a
 * bundle without the Spark jars. Skipped with the reason without a GPU or cudf ({@code
 * -Dmoeprep.requireGpu=true} fails instead). The cudf code lives in {@link CudfGpuChecks}, so that
 * this class loads without cudf.
 */
@Tag("rapids")
@Tag("gpu")
class CudfPermuteGpuTest {
  @BeforeEach
  void requireGpuAndCudf() {
    CudaSupport.Probe probe = CudaSupport.probe();
    GpuTests.require(probe.available(), probe.reason());
    String cudf;
    try {
      cudf = CudfGpuChecks.cudfUnavailable();
    } catch (LinkageError e) {
      cudf = "cudf-java is not on the class path: " + e;
    }
    GpuTests.require(cudf == null, cudf);
  }

  @Test
  void permutesCudfColumnsLikeTheCpuBackend() {
    CudfGpuChecks.permuterMatchesCpu(false);
  }

  @Test
  void splitsOutputsAtTheColumnLimitIntoSlicesOfOneBuffer() {
    CudfGpuChecks.permuterMatchesCpu(true);
  }

  @Test
  void awkwardShapes() {
    CudfGpuChecks.awkwardShapes();
  }

  @Test
  void rankPartitionOfSeveralTablesWithBatchesAcrossThem() {
    CudfGpuChecks.rankBatchesMatchCpu();
  }
}
