package io.moeprep.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.testing.GpuTests;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.api.Layout;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.api.PermuteSpec;
import io.moeprep.spark.exec.ExecutorRuntime;
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
    int before = ExecutorRuntime.device();
    ExecutorRuntime.useDevice(0);
    try {
      var backend = ExecutorRuntime.kernels(BackendChoice.CUDA).backend();
      assertEquals(0, ((io.moeprep.kernels.cuda.CudaBackend) backend).device().ordinal());
    } finally {
      ExecutorRuntime.useDevice(before);
    }
    assertTrue(
        ExecutorRuntime.GPU_BATCHES.getCount() > gpuBefore,
        "the GPU path ran: gpuBatches " + ExecutorRuntime.GPU_BATCHES.getCount());
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
