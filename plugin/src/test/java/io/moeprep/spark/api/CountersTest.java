package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.storage.StorageLevel;
import org.junit.jupiter.api.Test;

/**
 * MoePrep's counters as named accumulators: exact for the data computed, once per successful task,
 * not counted again by the row map; and the readable forms of a spec and an output.
 */
class CountersTest {
  private final SparkSession spark = SparkSessions.local();

  @Test
  void permuteAndUnpermuteCountTheirRowsBytesAndBatches() {
    TokenBatch tb = TokenBatch.random(new SplittableRandom(16), 3, 50, 6, DType.BF16, 2, 8, 0.1);
    PermuteSpec spec =
        PermuteSpec.builder(8, 4).hidden(6, DType.BF16).topK(2).backend(BackendChoice.AUTO).build();
    PermuteOutput out =
        MoePrep.permute(tb.toDataFrame(spark, true), spec).persist(StorageLevel.MEMORY_ONLY());
    try {
      BatchCounters c = out.counters();
      assertEquals(0, c.rows(), "nothing ran yet");
      List<Row> rows = out.data().collectAsList();
      long batches = 4L * tb.batchIds().size();
      assertEquals(rows.size(), c.rows());
      assertEquals(rows.size() * 12L, c.bytes());
      assertEquals(batches, c.gpuBatches() + c.cpuBatches(), "one per (rank, batch)");
      assertEquals(c.cpuBatches(), c.fallbacks(), "auto: every CPU batch is a fallback");
      out.rowMap().collectAsList();
      out.tokensPerExpert().collectAsList();
      assertEquals(rows.size(), c.rows(), "the other outputs are not counted");
      assertEquals(batches, c.gpuBatches() + c.cpuBatches());
      out.data().count();
      assertEquals(2L * rows.size(), c.rows(), "each action on data() adds");
      assertTrue(c.toString().startsWith("permute: " + 2 * rows.size() + " rows, "), c.toString());

      BatchCounters u =
          BatchCounters.register(spark.sparkContext(), "unpermute", BackendChoice.CPU);
      Dataset<Row> combined = MoePrep.unpermute(out.rows(), out.rowMap(), spec, u);
      long tokens = combined.count();
      assertEquals(tb.tokens.size(), tokens);
      assertEquals(tokens, u.rows());
      assertEquals(tokens * 12L, u.bytes());
      assertEquals(0, u.fallbacks(), "backend cpu never falls back");
    } finally {
      out.unpersist();
    }
  }

  @Test
  void specsAndOutputsPrintReadably() {
    PermuteSpec spec =
        PermuteSpec.builder(16, 4)
            .hidden(256, DType.BF16)
            .topK(4)
            .layout(Layout.PACKED)
            .backend(BackendChoice.CPU)
            .build();
    String s = spec.toString();
    assertFalse(s.contains("@"), s);
    assertTrue(s.contains("numExperts=16") && s.contains("hidden=256"), s);
    assertTrue(s.contains("layout=PACKED") && s.contains("backend=CPU"), s);
    TokenBatch tb = TokenBatch.random(new SplittableRandom(3), 1, 4, 256, DType.BF16, 4, 16, 0);
    String o = MoePrep.permute(tb.toDataFrame(spark, false), spec).toString();
    assertTrue(o.startsWith("PermuteOutput[CPU, probs false, PermuteSpec["), o);
    assertFalse(o.contains("@"), o);
  }
}
