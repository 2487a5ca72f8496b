package io.moeprep.spark.exec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.Backends;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.spec.TuningSettings;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.spark.TaskContext;
import org.apache.spark.TaskContextImpl;
import org.apache.spark.resource.ResourceInformation;
import org.junit.jupiter.api.Test;

/**
 * The task's GPU (issue 17.2): tasks running at once on one executor, each assigned its own GPU by
 * Spark ({@code TaskContext.resources()}), each get kernels on their own GPU, whatever ran before
 * or beside them; the executor's GPU is only the default of a task without one. CPU only: the
 * backends are fakes that report the ordinal they were chosen for.
 */
class KernelSelectionTest {
  private static final TuningSettings TUNING = new TuningSettings(0, true, 512, 16384, false, "");

  /** A backend that runs nothing and reports its device. */
  private record FakeGpu(int deviceOrdinal) implements KernelBackend {
    @Override
    public String name() {
      return "cuda";
    }

    @Override
    public PermuteResult permute(PermuteInput in, PermuteOptions options) {
      throw new UnsupportedOperationException();
    }

    @Override
    public HostBuffer unpermute(UnpermuteInput in) {
      throw new UnsupportedOperationException();
    }

    @Override
    public ChunkSortResult chunkSort(ChunkSortInput in) {
      throw new UnsupportedOperationException();
    }
  }

  /** A task context whose resources assign {@code gpu} (none when {@code null}). */
  private static TaskContext task(int id, String gpu) {
    scala.collection.immutable.Map<String, ResourceInformation> resources =
        scala.collection.immutable.Map$.MODULE$.empty();
    if (gpu != null) {
      resources = resources.updated("gpu", new ResourceInformation("gpu", new String[] {gpu}));
    }
    return new TaskContextImpl(
        0, 0, id, id, 0, 1, null, new Properties(), null, null, 1, resources);
  }

  @Test
  void concurrentTasksEachGetKernelsOnTheirOwnGpu() throws Exception {
    AtomicInteger chosen = new AtomicInteger();
    ConcurrentHashMap<Integer, KernelBackend> made = new ConcurrentHashMap<>();
    KernelSelection selection =
        new KernelSelection(
            (choice, device, tuning) -> {
              chosen.incrementAndGet();
              assertEquals(KernelTuning.class, tuning.getClass());
              return new Backends.Selection(made.computeIfAbsent(device, FakeGpu::new), null);
            });
    int gpus = 7; // any number of GPUs
    int tasks = 64;
    CyclicBarrier start = new CyclicBarrier(16);
    ExecutorService pool = Executors.newFixedThreadPool(16);
    try {
      List<Future<int[]>> results = new ArrayList<>();
      for (int t = 0; t < tasks; t++) {
        int id = t;
        results.add(
            pool.submit(
                () -> {
                  TaskContext ctx = task(id, Integer.toString(id % gpus));
                  start.await(); // 16 tasks at a time ask all at once (64 = 4 rounds)
                  int[] seen = new int[50];
                  for (int i = 0; i < seen.length; i++) {
                    // the executor's default would say 0: the task's own assignment wins
                    int device = KernelSelection.taskDevice(ctx, 0);
                    MoeKernels k =
                        MoeKernels.on(
                            selection.select(BackendChoice.CUDA, device, TUNING).backend());
                    seen[i] = k.backend().deviceOrdinal();
                    Thread.yield();
                  }
                  return seen;
                }));
      }
      for (int t = 0; t < tasks; t++) {
        for (int d : results.get(t).get()) {
          assertEquals(t % gpus, d, "task " + t + " ran on GPU " + d);
        }
      }
    } finally {
      pool.shutdownNow();
    }
    assertEquals(gpus, chosen.get(), "one backend per GPU, chosen once");
  }

  @Test
  void aTaskWithoutAGpuTakesTheExecutorsAndTheCpuNone() {
    assertEquals(3, KernelSelection.taskDevice(task(1, null), 3));
    assertEquals(3, KernelSelection.taskDevice(null, 3));
    assertEquals(5, KernelSelection.taskDevice(task(1, " 5 "), 3));
    assertEquals(-1, KernelSelection.taskDevice(task(1, "not-a-number"), -1));
    List<Integer> devices = new ArrayList<>();
    KernelSelection selection =
        new KernelSelection(
            (choice, device, tuning) -> {
              devices.add(device);
              return new Backends.Selection(new FakeGpu(device), null);
            });
    KernelBackend cpu = selection.select(BackendChoice.CPU, 4, TUNING).backend();
    assertSame(cpu, selection.select(BackendChoice.CPU, 2, TUNING).backend());
    assertEquals(List.of(-1), devices, "the CPU ignores the device");
    assertTrue(selection.select(BackendChoice.AUTO, 2, TUNING).backend().deviceOrdinal() == 2);
  }
}
