package io.moeprep.spark.api;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.countDistinct;
import static org.apache.spark.sql.functions.spark_partition_id;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The shuffle-less permute ({@link Partitioning#BATCH}) against the all-to-all ({@link
 * Partitioning#RANK}): the same rows, byte for byte, for every output of every (rank, batch); and
 * the plans: one shuffle by batch, none when the input is already partitioned by batch.
 */
class ShuffleLessTest {
  private final SparkSession spark = SparkSessions.local();

  /** Every output of a permute under a spec, as sorted lines (binary columns in hex). */
  private static List<String> lines(Dataset<Row> d) {
    List<String> out = new ArrayList<>();
    for (Row r : d.collectAsList()) {
      StringBuilder b = new StringBuilder();
      for (int i = 0; i < r.length(); i++) {
        Object v = r.get(i);
        b.append(i == 0 ? "" : "|")
            .append(v instanceof byte[] bytes ? HexFormat.of().formatHex(bytes) : v);
      }
      out.add(b.toString());
    }
    out.sort(null);
    return out;
  }

  private static void assertSameOutputs(Dataset<Row> df, PermuteSpec spec) {
    PermuteOutput byRank =
        MoePrep.permute(df, spec.toBuilder().partitioning(Partitioning.RANK).build());
    PermuteOutput byBatch =
        MoePrep.permute(df, spec.toBuilder().partitioning(Partitioning.BATCH).build());
    List<Function<PermuteOutput, Dataset<Row>>> outputs =
        List.of(
            PermuteOutput::rows,
            PermuteOutput::packed,
            PermuteOutput::rowMap,
            PermuteOutput::tokensPerExpert);
    String[] names = {"rows", "packed", "rowMap", "tokensPerExpert"};
    for (int i = 0; i < outputs.size(); i++) {
      List<String> expected = lines(outputs.get(i).apply(byRank));
      List<String> actual = lines(outputs.get(i).apply(byBatch));
      assertEquals(expected.size(), actual.size(), names[i] + ": row count");
      assertEquals(expected, actual, names[i] + ": same bytes as the all-to-all");
    }
  }

  @ParameterizedTest
  @EnumSource(Dispatch.class)
  void sameBytesAsTheAllToAll(Dispatch dispatch) {
    SplittableRandom rnd = Seeds.fresh("sameBytesAsTheAllToAll " + dispatch);
    TokenBatch tb = TokenBatch.random(rnd, 4, 1 + rnd.nextInt(90), 7, DType.BF16, 3, 12, 0.3);
    Dataset<Row> df = tb.toDataFrame(spark, true);
    PermuteSpec.Builder base =
        PermuteSpec.builder(12, 4)
            .hidden(7, DType.BF16)
            .topK(3)
            .dispatch(dispatch)
            .chunkBytes(1 + rnd.nextInt(300));
    assertSameOutputs(df, base.build());
    assertSameOutputs(df, base.perExpertCapacity(2, true).build());
    assertSameOutputs(df, base.perExpertCapacity(3, false).align(4).build());
    assertSameOutputs(
        df, PermuteSpec.builder(12, 4).hidden(7, DType.BF16).topK(3).numOut(11).build());
    assertSameOutputs(tb.toDataFrame(spark, false), base.build());
  }

  /** Exchanges in the physical plan of an output (before adaptive execution changes it). */
  private static int exchanges(Dataset<Row> d) {
    String plan = d.queryExecution().executedPlan().treeString();
    Matcher m = Pattern.compile("Exchange ").matcher(plan);
    int n = 0;
    while (m.find()) {
      n++;
    }
    return n;
  }

  @Test
  void oneShuffleByBatchNoneWhenTheInputIsPartitionedByBatch() {
    SplittableRandom rnd = Seeds.fresh("oneShuffleByBatch");
    TokenBatch tb = TokenBatch.random(rnd, 5, 10 + rnd.nextInt(40), 4, DType.F32, 2, 8, 0.2);
    PermuteSpec spec =
        PermuteSpec.builder(8, 4)
            .hidden(4, DType.F32)
            .topK(2)
            .partitioning(Partitioning.BATCH)
            .build();
    Dataset<Row> spread = tb.toDataFrame(spark, true); // round robin over 3 partitions
    PermuteOutput shuffled = MoePrep.permute(spread, spec);
    assertEquals(1, exchanges(spread), "the input's own round robin");
    assertEquals(2, exchanges(shuffled.rows()), "the input's and one by batch:\n" + plan(shuffled));
    assertTrue(plan(shuffled).contains("hashpartitioning(pkey"), plan(shuffled));
    // batch b in partition b mod n (n = spark.sql.shuffle.partitions = 3 in the tests)
    int n = Integer.parseInt(spark.conf().get("spark.sql.shuffle.partitions"));
    long misplaced =
        shuffled
            .rows()
            .withColumn("pid", spark_partition_id())
            .where(col("pid").notEqual(functions.pmod(col("batch"), functions.lit(n))))
            .count();
    assertEquals(0, misplaced, "batch b in partition b mod " + n);
    PermuteTest.assertMatchesKernels(tb, shuffled, true);

    Dataset<Row> byBatch = spread.repartition(4, col("batch"));
    PermuteOutput local = MoePrep.permute(byBatch, spec);
    assertEquals(1, exchanges(local.rows()), "only the input's own:\n" + plan(local));
    PermuteTest.assertMatchesKernels(tb, local, true);

    // every batch lies in one partition, with the rows of every rank
    for (PermuteOutput out : List.of(shuffled, local)) {
      List<Row> perBatch =
          out.rows()
              .withColumn("pid", spark_partition_id())
              .groupBy("batch")
              .agg(countDistinct(col("pid")), countDistinct(col("ep_rank")))
              .collectAsList();
      assertEquals(tb.batchIds().size(), perBatch.size());
      for (Row r : perBatch) {
        assertEquals(1L, r.getLong(1), "batch " + r.get(0) + " in one partition");
        assertEquals(4L, r.getLong(2), "batch " + r.get(0) + " permuted for every rank");
      }
    }
  }

  private static String plan(PermuteOutput out) {
    return out.rows().queryExecution().executedPlan().treeString();
  }
}
