package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Device faults: running out of device memory (the driver's own, and MoePrep's memory limit) and a
 * launch the driver refuses fail with the right exception, name what failed, and leave no memory
 * behind (the base class checks); the device works normally afterwards.
 */
@Tag("gpu")
class CudaFaultTest extends GpuLeakCheck {
  private final MoeKernels cpu = MoeKernels.on(CpuBackend.INSTANCE);

  @Test
  void theDriversOutOfMemoryIsADeviceOutOfMemoryException() {
    CudaDevice dev = ((CudaBackend) CudaSupport.backend()).device();
    long total = dev.memoryInfo()[1];
    long before = dev.bytesAllocated();
    DeviceOutOfMemoryException e =
        assertThrows(DeviceOutOfMemoryException.class, () -> DeviceBuffer.allocate(dev, 2 * total));
    assertTrue(e.getMessage().contains("CUDA_ERROR_OUT_OF_MEMORY"), e.getMessage());
    assertEquals(2, e.errorCode());
    assertEquals(before, dev.bytesAllocated());
  }

  @Test
  void theMemoryLimitFailsEveryStageOfABatchCleanly() {
    SplittableRandom rnd =
        Seeds.fresh("CudaFaultTest.theMemoryLimitFailsEveryStageOfABatchCleanly");
    CudaBackend backend = (CudaBackend) CudaSupport.backend();
    MoeKernels gpu = MoeKernels.on(backend);
    CudaDevice dev = backend.device();
    long n = 500 + rnd.nextInt(500);
    int h = 512;
    int k = 4;
    try (RandomBatch b = RandomBatch.create(rnd, n, h, k, 8, DType.BF16, 0.1)) {
      PermuteInput in = new PermuteInput(b.tokens, n, h, DType.BF16, b.routing, k, b.probs);
      PermuteOptions o = PermuteOptions.forRank(8, 1, 0);
      long before = dev.bytesAllocated();
      // limits from a few bytes to just short of what the batch needs: the first allocation,
      // the scratch, the outputs or the token upload is refused
      long need = n * h * 2 * (1 + k) + n * k * 40 + (1 << 20);
      int refused = 0;
      for (long limit = 4; limit < need; limit = limit * 3 + rnd.nextInt(1000)) {
        dev.setMemoryLimit(limit);
        try (PermuteResult r = gpu.permute(in, o)) {
          assertTrue(limit > n * h * 2, "fit under " + limit + " bytes");
        } catch (DeviceOutOfMemoryException e) {
          refused++;
          assertTrue(
              e.getMessage().contains("memory limit is " + limit + " bytes"), e.getMessage());
        } finally {
          dev.setMemoryLimit(0);
        }
        assertEquals(before, dev.bytesAllocated(), "device bytes after limit " + limit);
      }
      assertTrue(refused > 3, "refused " + refused + " times");
      try (PermuteResult c = cpu.permute(in, o);
          PermuteResult g = gpu.permute(in, o)) {
        CudaBackendTest.assertSame(c, g, "after the refusals");
      }
    }
  }

  @Test
  void aRefusedLaunchNamesKernelAndGrid() {
    SplittableRandom rnd = Seeds.fresh("CudaFaultTest.aRefusedLaunchNamesKernelAndGrid");
    MoeKernels gpu = MoeKernels.on(CudaSupport.backend());
    long n = 100;
    try (RandomBatch b = RandomBatch.create(rnd, n, 64, 2, 4, DType.BF16, 0.0)) {
      PermuteInput in = new PermuteInput(b.tokens, n, 64, DType.BF16, b.routing, 2, b.probs);
      PermuteOptions o = PermuteOptions.forRank(4, 1, 0);
      // the fused map kernel (the default at this size), the unfused one, the data kernel; the
      // fault is injected through the backend's tuning, passed down
      for (String kernel :
          new String[] {"moeprep_map_fused", "moeprep_count_experts", "moeprep_permute_rows"}) {
        KernelTuning d = KernelTuning.DEFAULT;
        KernelTuning failing =
            new KernelTuning(
                d.cpuThreads(),
                !kernel.equals("moeprep_count_experts"),
                d.fusedMinBlockSlots(),
                d.fusedTaggedCells(),
                false,
                kernel);
        MoeKernels faulty = MoeKernels.on(CudaSupport.backend(0, failing));
        MoePrepCudaException e =
            assertThrows(MoePrepCudaException.class, () -> faulty.permute(in, o).close());
        assertTrue(
            e.getMessage().matches("kernel " + kernel + "\\w* <<<\\d+, 4096, \\d+ B shared>>>.*"),
            e.getMessage());
        assertTrue(e.getMessage().contains("CUDA_ERROR_INVALID_VALUE"), e.getMessage());
        MoePrepCudaException in2 = e.in("rank 3, batch 17");
        assertTrue(in2.getMessage().startsWith("rank 3, batch 17: kernel " + kernel));
      }
      try (PermuteResult c = cpu.permute(in, o);
          PermuteResult g = gpu.permute(in, o);
          HostBuffer cu = cpu.unpermute(combine(c, n, b.probs));
          HostBuffer gu = gpu.unpermute(combine(c, n, b.probs))) {
        CudaBackendTest.assertSame(c, g, "after the refused launches");
        CudaBackendTest.assertBytes(cu, gu, "unpermute after the refused launches");
      }
    }
  }

  /** The permuted rows combined back through the row map (h = 64, k = 2, BF16). */
  private static UnpermuteInput combine(PermuteResult r, long n, HostBuffer probs) {
    return new UnpermuteInput(r.permuted(), r.numOut(), r.rowIdMap(), n, 2, 64, DType.BF16, probs);
  }
}
