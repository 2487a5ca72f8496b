package io.moeprep.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.testing.GpuTests;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * On a GPU machine: the same local-mode jobs with backend cuda give the same bytes as with cpu, and
 * the metrics show the GPU path ran. Skipped with the reason elsewhere ({@code
 * -Dmoeprep.requireGpu=true} makes it fail instead).
 */
@Tag("gpu")
class GpuPathTest {
  @Test
  void cudaGivesTheBytesOfCpu() {
    CudaSupport.Probe probe = ExecutorRuntime.probe();
    GpuTests.require(probe.available(), probe.reason());
    SparkSession spark = SparkSessions.local();
    SplittableRandom rnd = Seeds.fresh("cudaGivesTheBytesOfCpu");
    TokenBatch tb = TokenBatch.random(rnd, 3, 500 + rnd.nextInt(500), 129, DType.BF16, 4, 16, 0.2);
    Dataset<Row> df = tb.toDataFrame(spark, true);
    PermuteSpec.Builder b =
        PermuteSpec.builder(16, 4).hidden(129, DType.BF16).topK(4).perExpertCapacity(90, true);
    long gpuBefore = ExecutorRuntime.GPU_BATCHES.getCount();
    for (Layout layout : Layout.values()) {
      PermuteOutput cpu = MoePrep.permute(df, b.backend(BackendChoice.CPU).layout(layout).build());
      PermuteOutput gpu = MoePrep.permute(df, b.backend(BackendChoice.CUDA).layout(layout).build());
      assertSame(cpu.data(), gpu.data(), layout == Layout.ROWS ? "ep_rank, batch, row" : null);
      assertSame(cpu.rowMap(), gpu.rowMap(), "ep_rank, batch, token_id");
      PermuteSpec cs = b.backend(BackendChoice.CPU).layout(layout).build();
      PermuteSpec gs = b.backend(BackendChoice.CUDA).layout(layout).build();
      assertSame(
          MoePrep.unpermute(cpu.data(), cpu.rowMap(), cs),
          MoePrep.unpermute(gpu.data(), gpu.rowMap(), gs),
          "batch, token_id");
    }
    // the GPU Spark's resource scheduling assigns is the one the kernels run on
    var backend =
        ExecutorRuntime.kernels(BackendChoice.CUDA, b.build().settings().tuning(), 0).backend();
    assertEquals(0, backend.deviceOrdinal());
    assertEquals(0, ((io.moeprep.kernels.cuda.CudaBackend) backend).device().ordinal());
    assertTrue(
        ExecutorRuntime.GPU_BATCHES.getCount() > gpuBefore,
        "the GPU path ran: gpuBatches " + ExecutorRuntime.GPU_BATCHES.getCount());
  }

  @Test
  void outOfDeviceMemoryRunsTheBatchOnTheCpu() {
    CudaSupport.Probe probe = ExecutorRuntime.probe();
    GpuTests.require(probe.available(), probe.reason());
    SparkSession spark = SparkSessions.local();
    SplittableRandom rnd = Seeds.fresh("outOfDeviceMemoryRunsTheBatchOnTheCpu");
    TokenBatch tb = TokenBatch.random(rnd, 2, 300 + rnd.nextInt(300), 256, DType.BF16, 2, 8, 0.1);
    Dataset<Row> df = tb.toDataFrame(spark, true);
    PermuteSpec.Builder b = PermuteSpec.builder(8, 2).hidden(256, DType.BF16).topK(2);
    PermuteSpec cs = b.backend(BackendChoice.CPU).build();
    // 64 KiB of device memory cannot hold one batch (each holds > 100 KiB of hidden data)
    PermuteSpec gs = b.backend(BackendChoice.CUDA).gpuMemoryLimit(64 << 10).build();
    long oomBefore = ExecutorRuntime.OOM_FALLBACKS.getCount();
    long gpuBefore = ExecutorRuntime.GPU_BATCHES.getCount();
    PermuteOutput cpu = MoePrep.permute(df, cs);
    PermuteOutput gpu = MoePrep.permute(df, gs);
    assertSame(cpu.data(), gpu.data(), "ep_rank, batch, row");
    assertSame(
        MoePrep.unpermute(cpu.data(), cpu.rowMap(), cs),
        MoePrep.unpermute(gpu.data(), gpu.rowMap(), gs),
        "batch, token_id");
    long batches = 2L * 2; // 2 batches on each of 2 ranks
    assertTrue(
        ExecutorRuntime.OOM_FALLBACKS.getCount() - oomBefore >= batches,
        "oomFallbacks grew by " + (ExecutorRuntime.OOM_FALLBACKS.getCount() - oomBefore));
    assertEquals(gpuBefore, ExecutorRuntime.GPU_BATCHES.getCount(), "no batch fit on the GPU");
    String reason = ExecutorRuntime.fallbackReason();
    assertTrue(
        reason.contains("batch ") && reason.contains("memory limit is 65536 bytes"),
        "reason names the batch and the limit: " + reason);
    // without the fallback, the job fails naming rank, batch and the limit
    PermuteSpec strict = gs.toBuilder().oomFallback(false).build();
    Exception e =
        org.junit.jupiter.api.Assertions.assertThrows(
            Exception.class, () -> MoePrep.permute(df, strict).data().count());
    String all = causes(e);
    assertTrue(all.contains("rank ") && all.contains(", batch "), all);
    assertTrue(all.contains("DeviceOutOfMemoryException"), all);
  }

  @Test
  void aFailingLaunchNamesKernelGridRankAndBatch() {
    CudaSupport.Probe probe = ExecutorRuntime.probe();
    GpuTests.require(probe.available(), probe.reason());
    SparkSession spark = SparkSessions.local();
    SplittableRandom rnd = Seeds.fresh("aFailingLaunchNamesKernelGridRankAndBatch");
    TokenBatch tb = TokenBatch.random(rnd, 1, 64, 64, DType.BF16, 2, 4, 0.0);
    Dataset<Row> df = tb.toDataFrame(spark, true);
    PermuteSpec gs =
        PermuteSpec.builder(4, 2)
            .hidden(64, DType.BF16)
            .topK(2)
            .backend(BackendChoice.CUDA)
            .build();
    // the fault is injected through the job's tuning (an internal entry), passed down
    spark.conf().set("spark.moeprep.internal.cuda.failLaunch", "moeprep_permute_rows");
    try {
      Exception e =
          org.junit.jupiter.api.Assertions.assertThrows(
              Exception.class, () -> MoePrep.permute(df, gs).data().count());
      String all = causes(e);
      assertTrue(
          all.matches("(?s).*rank \\d, batch 0: kernel moeprep_permute_rows_v\\d+ <<<.*"), all);
      assertTrue(all.contains("CUDA_ERROR_INVALID_VALUE"), all);
    } finally {
      spark.conf().unset("spark.moeprep.internal.cuda.failLaunch");
    }
  }

  private static String causes(Throwable t) {
    StringBuilder b = new StringBuilder();
    for (Throwable c = t; c != null; c = c.getCause()) {
      b.append(c).append('\n');
    }
    return b.toString();
  }

  private static void assertSame(Dataset<Row> a, Dataset<Row> b, String order) {
    String o = order == null ? "ep_rank, batch, row_offset" : order;
    List<Row> x = a.orderBy(o.split(", ")[0], o.split(", ")).collectAsList();
    List<Row> y = b.orderBy(o.split(", ")[0], o.split(", ")).collectAsList();
    assertEquals(x.size(), y.size());
    for (int i = 0; i < x.size(); i++) {
      for (int f = 0; f < x.get(i).length(); f++) {
        Object u = x.get(i).get(f);
        Object v = y.get(i).get(f);
        if (u instanceof byte[] ub) {
          assertArrayEquals(ub, (byte[]) v, "row " + i + " field " + f);
        } else {
          assertEquals(String.valueOf(u), String.valueOf(v), "row " + i + " field " + f);
        }
      }
    }
  }
}
