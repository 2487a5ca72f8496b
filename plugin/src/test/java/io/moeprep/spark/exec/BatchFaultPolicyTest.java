package io.moeprep.spark.exec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.DeviceOutOfMemoryException;
import io.moeprep.kernels.cuda.MoePrepCudaException;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.kernels.workload.SyntheticRouting;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * What {@link ExecutorRuntime#runBatch} does with a device failure of a batch, on a backend that
 * fails the way the CUDA backend does (the real one is exercised by GpuPathTest on a GPU): out of
 * device memory runs the batch again on the CPU, counted and with its reason, giving the CPU's
 * bytes, unless the fallback is off; any other device failure names rank and batch.
 */
class BatchFaultPolicyTest {
  private static final PermuteSpec SPEC =
      PermuteSpec.builder(8, 2).hidden(33, DType.BF16).topK(3).build().resolve(k -> null);

  /** Fails every permute with {@code failure}, as a GPU backend would. */
  private record Failing(RuntimeException failure) implements KernelBackend {
    @Override
    public String name() {
      return "cuda";
    }

    @Override
    public PermuteResult permute(PermuteInput in, PermuteOptions options) {
      throw failure;
    }

    @Override
    public HostBuffer unpermute(UnpermuteInput in) {
      throw failure;
    }

    @Override
    public ChunkSortResult chunkSort(ChunkSortInput in) {
      throw failure;
    }
  }

  @Test
  void outOfDeviceMemoryRunsOnTheCpuWithTheSameBytes() {
    SplittableRandom rnd = Seeds.fresh("BatchFaultPolicyTest.outOfDeviceMemory");
    long n = 1 + rnd.nextInt(200);
    try (HostBuffer tokens = HostBuffer.allocate(n * 66);
        HostBuffer routing = HostBuffer.allocate(n * 12);
        HostBuffer probs = HostBuffer.allocate(n * 12)) {
      for (long i = 0; i < tokens.size(); i++) {
        tokens.putByte(i, (byte) rnd.nextInt());
      }
      SyntheticRouting.fill(rnd, routing, probs, n, 3, 8, 0.2);
      PermuteInput in = new PermuteInput(tokens, n, 33, DType.BF16, routing, 3, probs);
      PermuteOptions o = SPEC.shape().optionsForRank(1);
      MoeKernels failing =
          MoeKernels.on(new Failing(new DeviceOutOfMemoryException("cuMemAlloc(99 bytes) failed")));
      long oom = ExecutorRuntime.OOM_FALLBACKS.getCount();
      long cpuBatches = ExecutorRuntime.CPU_BATCHES.getCount();
      try (PermuteResult expected = MoeKernels.on(CpuBackend.INSTANCE).permute(in, o);
          PermuteResult got =
              ExecutorRuntime.runBatch(
                  failing, SPEC.settings(), "rank 1, batch 5", k -> k.permute(in, o))) {
        assertEquals(expected.numOut(), got.numOut());
        assertArrayEquals(
            expected.permuted().toBytes(0, expected.permuted().size()),
            got.permuted().toBytes(0, got.permuted().size()));
        assertArrayEquals(
            expected.rowIdMap().toBytes(0, expected.rowIdMap().size()),
            got.rowIdMap().toBytes(0, got.rowIdMap().size()));
      }
      assertEquals(oom + 1, ExecutorRuntime.OOM_FALLBACKS.getCount());
      assertEquals(cpuBatches + 1, ExecutorRuntime.CPU_BATCHES.getCount());
      assertEquals(
          "rank 1, batch 5: cuMemAlloc(99 bytes) failed", ExecutorRuntime.fallbackReason());

      PermuteSpec strict = SPEC.toBuilder().oomFallback(false).build();
      DeviceOutOfMemoryException e =
          assertThrows(
              DeviceOutOfMemoryException.class,
              () ->
                  ExecutorRuntime.runBatch(
                      failing, strict.settings(), "rank 1, batch 5", k -> k.permute(in, o)));
      assertEquals("rank 1, batch 5: cuMemAlloc(99 bytes) failed", e.getMessage());
      assertEquals(oom + 1, ExecutorRuntime.OOM_FALLBACKS.getCount());
    }
  }

  @Test
  void anotherDeviceFailureNamesRankAndBatch() {
    String launch =
        "kernel moeprep_permute_rows_v16 <<<12, 4096, 0 B shared>>> on device 0 failed:"
            + " CUDA_ERROR_INVALID_VALUE (1)";
    MoeKernels failing = MoeKernels.on(new Failing(new MoePrepCudaException(launch, 1)));
    try (HostBuffer tokens = HostBuffer.allocateZeroed(66);
        HostBuffer routing = HostBuffer.allocateZeroed(12)) {
      PermuteInput in = new PermuteInput(tokens, 1, 33, DType.BF16, routing, 3, null);
      MoePrepCudaException e =
          assertThrows(
              MoePrepCudaException.class,
              () ->
                  ExecutorRuntime.runBatch(
                      failing,
                      SPEC.settings(),
                      "rank 0, batch 7",
                      k -> k.permute(in, SPEC.shape().optionsForRank(0))));
      assertEquals("rank 0, batch 7: " + launch, e.getMessage());
      assertEquals(1, e.errorCode());
      assertInstanceOf(MoePrepCudaException.class, e.getCause());
      assertTrue(!(e instanceof DeviceOutOfMemoryException));
    }
  }
}
