package io.moeprep.spark.rapids;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.lit;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.SparkException;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.Test;

/**
 * The columnar plan of {@link ColumnarPermute} in a session without RAPIDS, where Spark calls the
 * UDF's row form: its {@code ROWS} output equals the row route's byte for byte (routing with -1,
 * capacity with padding and drops, numOut, with and without probs), and its plan is one shuffle by
 * batch, a collect_list and an explode around the UDF.
 */
class ColumnarPermuteTest {
  private static final SparkSession SPARK = SparkSessions.local();

  /** The permute's input as MoePrep selects it: token_id, hidden, expert_ids, probs, batch. */
  static Dataset<Row> selected(Dataset<Row> df, boolean probs) {
    boolean batch = java.util.Arrays.asList(df.columns()).contains("batch");
    return df.select(
        col("token_id"),
        col("hidden"),
        col("expert_ids"),
        probs
            ? col("probs")
            : lit(null).cast(DataTypes.createArrayType(DataTypes.FloatType)).as("probs"),
        batch ? col("batch") : lit(null).cast("long").as("batch"));
  }

  private static void assertSameRows(
      TokenBatch tokens, PermuteSpec spec, boolean probs, boolean batchColumn) {
    Dataset<Row> df = tokens.toDataFrame(SPARK, probs);
    if (!batchColumn) {
      df = df.drop("batch");
    }
    PermuteSpec cpu = spec.toBuilder().backend(BackendChoice.CPU).build();
    PermuteOutput rowRoute = MoePrep.permute(df, cpu);
    assertTrue(rowRoute.columnarReason() != null, "a plain session takes the row route");
    List<String> expected = RapidsExplainOnlyTest.lines(rowRoute.rows().collectAsList());
    PermuteSpec resolved = cpu.resolve(k -> SPARK.conf().get(k, null));
    Dataset<Row> plan =
        ColumnarPermute.rows(selected(df, probs), batchColumn, resolved, probs, null, false);
    assertEquals(Schemas.ROWS, plan.schema());
    List<String> got = RapidsExplainOnlyTest.lines(plan.collectAsList());
    assertTrue(expected.size() > 50, "a non-trivial output: " + expected.size() + " rows");
    assertEquals(expected.size(), got.size(), "rows");
    for (int i = 0; i < expected.size(); i++) {
      assertEquals(expected.get(i), got.get(i), "row " + i + " (rank batch row ...)");
    }
  }

  @Test
  void rowFormGivesTheRowRoutesBytes() {
    SplittableRandom rnd = Seeds.fresh("columnarRowForm");
    TokenBatch tokens = TokenBatch.random(rnd, 4, 61, 37, DType.BF16, 4, 16, 0.25);
    PermuteSpec base = PermuteSpec.builder(16, 4).hidden(37, DType.BF16).topK(4).build();
    // capacity with padding and drops, probs
    assertSameRows(tokens, base.toBuilder().perExpertCapacity(9, true).build(), true, true);
    // no capacity, no probs, rank partitioning asked (the plan is by batch either way)
    assertSameRows(tokens, base.toBuilder().partitioning(Partitioning.RANK).build(), false, true);
    // all_gather with numOut
    assertSameRows(
        tokens, base.toBuilder().dispatch(Dispatch.ALL_GATHER).numOut(300).build(), true, true);
    // no batch column: token t in batch t / tokensPerBatch
    assertSameRows(tokens, base.toBuilder().tokensPerBatch(70).build(), true, false);
  }

  /** 8 experts over 2 ranks, K = 2, 8 f32 per token, resolved in this session. */
  private static PermuteSpec smallSpec() {
    return PermuteSpec.builder(8, 2)
        .hidden(8, DType.F32)
        .topK(2)
        .build()
        .resolve(k -> SPARK.conf().get(k, null));
  }

  @Test
  void planIsOneShuffleByBatchACollectAndAnExplode() {
    TokenBatch tokens =
        TokenBatch.random(Seeds.fresh("columnarPlan"), 2, 16, 8, DType.F32, 2, 8, 0.0);
    PermuteSpec spec = smallSpec();
    Dataset<Row> plan =
        ColumnarPermute.rows(
            selected(tokens.toDataFrame(SPARK, true), true), true, spec, true, null, false);
    String physical = plan.queryExecution().executedPlan().toString();
    assertTrue(physical.contains("collect_list"), physical);
    assertTrue(physical.contains("Generate explode(" + ColumnarPermute.UDF_NAME), physical);
    assertEquals(1, physical.split("Exchange hashpartitioning\\(batch").length - 1, physical);
    assertTrue(!physical.contains("MapPartitions"), "no row task: " + physical);
  }

  @Test
  void aBadTokenFailsNamingIt() {
    List<Row> rows = new ArrayList<>();
    rows.add(RowFactory.create(5L, 0L, new byte[32], new Integer[] {0, 1}, null));
    rows.add(RowFactory.create(9L, 0L, new byte[31], new Integer[] {2, 3}, null));
    Dataset<Row> df = SPARK.createDataFrame(rows, TokenBatch.SCHEMA).drop("probs");
    PermuteSpec spec = smallSpec();
    SparkException e =
        assertThrows(
            SparkException.class,
            () ->
                ColumnarPermute.rows(selected(df, false), true, spec, false, null, false)
                    .collect());
    String all = String.valueOf(e.getMessage()) + " " + e.getCause();
    assertTrue(all.contains("token_id=9: hidden has 31 bytes, expected 32"), all);
  }
}
