package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.Backends;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import jcuda.driver.JCudaDriver;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Tasks running at once, each with the backend chosen for its own GPU (task {@code i} on GPU {@code
 * i mod devices}: every GPU of the machine, one here or several), permute and unpermute their
 * batches concurrently; each task's kernels run on its GPU and give the CPU backend's bytes.
 */
@Tag("gpu")
class ConcurrentTasksGpuTest extends GpuLeakCheck {
  private final MoeKernels cpu = MoeKernels.on(CpuBackend.INSTANCE);

  @Test
  void concurrentTasksRunOnTheirOwnGpus() throws Exception {
    int[] count = new int[1];
    JCudaDriver.cuDeviceGetCount(count);
    int devices = count[0];
    int tasks = 8;
    CyclicBarrier start = new CyclicBarrier(tasks);
    ExecutorService pool = Executors.newFixedThreadPool(tasks);
    try {
      List<Future<Integer>> done = new ArrayList<>();
      for (int t = 0; t < tasks; t++) {
        int task = t;
        done.add(
            pool.submit(
                () -> {
                  int gpu = task % devices;
                  MoeKernels k =
                      MoeKernels.on(
                          Backends.choose(BackendChoice.CUDA, gpu, KernelTuning.DEFAULT).backend());
                  assertEquals(gpu, k.backend().deviceOrdinal(), "task " + task);
                  SplittableRandom rnd = Seeds.fresh("ConcurrentTasksGpuTest.task" + task);
                  start.await();
                  int batches = 0;
                  for (int b = 0; b < 10; b++) {
                    long n = 1 + rnd.nextInt(2000);
                    int h = 64 + rnd.nextInt(512);
                    try (RandomBatch in = RandomBatch.create(rnd, n, h, 4, 32, DType.BF16, 0.1);
                        PermuteResult c = cpu.permute(in.input(true), PermuteOptions.of(32));
                        PermuteResult g = k.permute(in.input(true), PermuteOptions.of(32));
                        HostBuffer cu = cpu.unpermute(combine(c, n, h, in.probs));
                        HostBuffer gu = k.unpermute(combine(g, n, h, in.probs))) {
                      String what = "task " + task + " on GPU " + gpu + ", batch " + b;
                      CudaBackendTest.assertSame(c, g, what);
                      CudaBackendTest.assertBytes(cu, gu, "unpermute, " + what);
                    }
                    batches++;
                  }
                  return batches;
                }));
      }
      for (Future<Integer> f : done) {
        assertEquals(10, f.get());
      }
    } finally {
      pool.shutdownNow();
    }
  }

  private static UnpermuteInput combine(PermuteResult r, long n, int h, HostBuffer probs) {
    return new UnpermuteInput(r.permuted(), r.numOut(), r.rowIdMap(), n, 4, h, DType.BF16, probs);
  }
}
