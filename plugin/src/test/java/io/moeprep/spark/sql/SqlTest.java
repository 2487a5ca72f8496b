package io.moeprep.spark.sql;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;

/** The SQL helpers of the session extensions, and permute/unpermute from SQL alone. */
class SqlTest {
  private final SparkSession spark = SparkSessions.local();

  @Test
  void maskRankAndRanks() {
    Row r =
        spark
            .sql(
                "SELECT moe_mask_rank(array(0, 3), 0, 4, 2), moe_mask_rank(array(0, 3), 1, 4, 2),"
                    + " moe_mask_rank(array(-1, 2), 1, 4, 2), moe_ranks(array(3, 2), 4, 2),"
                    + " moe_ranks(array(0, 3), 4, 2), moe_ranks(array(-1, -1), 4, 2)")
            .first();
    StringBuilder got = new StringBuilder();
    for (int i = 0; i < r.length(); i++) {
      got.append(r.getList(i)).append(' ');
    }
    assertEquals("[0, -1] [-1, 3] [-1, 2] [1] [0, 1] [] ", got.toString());
    Exception e =
        assertThrows(
            Exception.class,
            () -> spark.sql("SELECT moe_mask_rank(array(0, 4), 0, 4, 2)").collect());
    String all = io.moeprep.spark.api.BadRowsTestAccess.causes(e);
    assertTrue(all.contains("expert_ids[1] = 4 is out of range [0, 4) or -1"), all);
  }

  @Test
  void permuteAndUnpermuteFromSql() {
    SplittableRandom rnd = Seeds.fresh("permuteFromSql");
    TokenBatch tb = TokenBatch.random(rnd, 2, 40, 6, DType.BF16, 2, 8, 0.2);
    tb.toDataFrame(spark, true).createOrReplaceTempView("sql_tokens");
    String opts = "numExperts '8', epSize '4', hidden '6', dtype 'bf16', topK '2'";
    spark.sql(
        "CREATE OR REPLACE TEMPORARY VIEW sql_permuted USING moeprep OPTIONS (op 'permute',"
            + " table 'sql_tokens', output 'packed', "
            + opts
            + ")");
    spark.sql(
        "CREATE OR REPLACE TEMPORARY VIEW sql_row_map USING moeprep OPTIONS (table 'sql_tokens',"
            + " output 'rowMap', "
            + opts
            + ")");
    PermuteSpec spec = PermuteSpec.builder(8, 4).hidden(6, DType.BF16).topK(2).build();
    List<Row> viaApi =
        MoePrep.permute(tb.toDataFrame(spark, true), spec)
            .packed()
            .orderBy("ep_rank", "batch", "row_offset")
            .collectAsList();
    List<Row> viaSql =
        spark.sql("SELECT * FROM sql_permuted ORDER BY ep_rank, batch, row_offset").collectAsList();
    assertEquals(viaApi.size(), viaSql.size());
    for (int i = 0; i < viaApi.size(); i++) {
      for (int f = 0; f < 10; f++) {
        assertEquals(String.valueOf(viaApi.get(i).get(f)), String.valueOf(viaSql.get(i).get(f)));
      }
      assertTrue(
          java.util.Arrays.equals((byte[]) viaApi.get(i).get(10), (byte[]) viaSql.get(i).get(10)));
    }
    // combine the identity expert outputs: sum over kept slots of prob * x, from SQL alone
    spark.sql(
        "CREATE OR REPLACE TEMPORARY VIEW sql_combined USING moeprep OPTIONS (op 'unpermute',"
            + " expertOutputs 'sql_permuted', rowMap 'sql_row_map', "
            + opts
            + ")");
    List<Row> api =
        MoePrep.unpermute(
                spark.table("sql_permuted"), spark.table("sql_row_map"), spec.toBuilder().build())
            .orderBy("batch", "token_id")
            .collectAsList();
    List<Row> sql =
        spark.sql("SELECT * FROM sql_combined ORDER BY batch, token_id").collectAsList();
    assertEquals(tb.tokens.size(), sql.size());
    for (int i = 0; i < api.size(); i++) {
      assertEquals(api.get(i).getLong(1), sql.get(i).getLong(1));
      assertTrue(java.util.Arrays.equals((byte[]) api.get(i).get(2), (byte[]) sql.get(i).get(2)));
    }
  }
}
