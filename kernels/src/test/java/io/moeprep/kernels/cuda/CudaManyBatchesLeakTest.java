package io.moeprep.kernels.cuda;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.ManyBatchesLeakTest;
import io.moeprep.kernels.MoeKernels;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * 10,000 batches through the CUDA backend, bad ones included: device, pinned and host memory in use
 * are back at their starting level afterwards (checked by {@link GpuLeakCheck}).
 */
@Tag("gpu")
class CudaManyBatchesLeakTest extends GpuLeakCheck {

  @Test
  void tenThousandBatchesLeaveNoMemoryBehind() {
    long rows = ManyBatchesLeakTest.runBatches(MoeKernels.create(BackendChoice.CUDA), 10_000);
    System.out.println("CUDA: 10,000 batches, " + rows + " permuted rows");
  }
}
