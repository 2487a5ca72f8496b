package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.DType;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The contract's EP example as a DataFrame: E=4, R=2; tokens a, b, c routed to [0,3], [2,1], [3,2].
 * Rank 0 permutes rows a, b; rank 1 permutes b, c, a, c.
 */
class ContractExampleTest {
  private final SparkSession spark = SparkSessions.local();

  @ParameterizedTest
  @EnumSource(Dispatch.class)
  void seedExample(Dispatch dispatch) {
    Dataset<Row> tokens =
        spark.sql(
            "SELECT * FROM VALUES"
                + " (0L, X'0A', array(0, 3)), (1L, X'0B', array(2, 1)), (2L, X'0C', array(3, 2))"
                + " AS t(token_id, hidden, expert_ids)");
    PermuteSpec spec =
        PermuteSpec.builder(4, 2).hidden(1, DType.FP8_E4M3).topK(2).dispatch(dispatch).build();
    PermuteOutput out = MoePrep.permute(tokens, spec);
    List<Row> rows =
        out.rows()
            .selectExpr("ep_rank", "row", "expert", "local_expert", "token_id", "slot", "hidden")
            .orderBy("ep_rank", "row")
            .collectAsList();
    String got =
        String.join(
            " ",
            rows.stream()
                .map(
                    r ->
                        r.getInt(0)
                            + ":"
                            + r.getInt(1)
                            + ":e"
                            + r.getInt(2)
                            + "/l"
                            + r.getInt(3)
                            + ":"
                            + (char) ('a' + r.getLong(4))
                            + r.getInt(5)
                            + ":"
                            + ((byte[]) r.get(6))[0])
                .toList());
    // rank 0 owns experts 0, 1: rows a (expert 0), b (expert 1)
    // rank 1 owns experts 2, 3: rows b (expert 2), c (expert 2), a (expert 3), c (expert 3)
    assertEquals(
        "0:0:e0/l0:a0:10 0:1:e1/l1:b1:11"
            + " 1:0:e2/l0:b0:11 1:1:e2/l0:c1:12 1:2:e3/l1:a1:10 1:3:e3/l1:c0:12",
        got);
    List<Row> map = out.rowMap().orderBy("ep_rank", "token_id").collectAsList();
    String maps =
        String.join(
            " ",
            map.stream().map(r -> r.getInt(0) + ":" + r.getLong(2) + "=" + r.getList(3)).toList());
    // the masked maps of the contract: rank 0 [[0,-1],[-1,1],[-1,-1]], rank 1 [[-1,3],[2,-1],[3,2]]
    String expected =
        dispatch == Dispatch.ALL_GATHER
            ? "0:0=[0, -1] 0:1=[-1, 1] 0:2=[-1, -1] 1:0=[-1, 2] 1:1=[0, -1] 1:2=[3, 1]"
            : "0:0=[0, -1] 0:1=[-1, 1] 1:0=[-1, 2] 1:1=[0, -1] 1:2=[3, 1]";
    assertEquals(expected, maps);
    List<Row> tpe =
        out.tokensPerExpert()
            .selectExpr("ep_rank", "expert", "kept")
            .orderBy("expert")
            .collectAsList();
    assertEquals("[[0,0,1], [0,1,1], [1,2,2], [1,3,2]]", tpe.toString());
  }
}
