package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A bad row fails the job with a message naming its token id, and no output is committed: the write
 * goes through Spark's committer, and the rows are validated in the map tasks, before any output
 * task runs.
 */
class BadRowsTest {
  private final SparkSession spark = SparkSessions.local();

  @TempDir Path dir;

  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "X'0A0B0C' | array(1, 2) | array(0.5f, 0.5f) | token_id=42: hidden has 3 bytes, expected 4",
        "X'0A0B0C0D' | array(1, 300) | array(0.5f, 0.5f) | token_id=42: expert_ids[1] = 300 is out"
            + " of range [0, 8) or -1",
        "X'0A0B0C0D' | array(-2, 1) | array(0.5f, 0.5f) | token_id=42: expert_ids[0] = -2 is out of"
            + " range [0, 8) or -1",
        "X'0A0B0C0D' | array(1, 2, 3) | array(0.5f, 0.5f) | token_id=42: expert_ids has 3 entries,"
            + " expected topK = 2",
        "X'0A0B0C0D' | array(1) | array(0.5f, 0.5f) | token_id=42: expert_ids has 1 entries",
        "CAST(NULL AS BINARY) | array(1, 2) | array(0.5f, 0.5f) | token_id=42: hidden is null",
        "X'0A0B0C0D' | CAST(NULL AS ARRAY<INT>) | array(0.5f, 0.5f) | token_id=42: expert_ids is"
            + " null",
        "X'0A0B0C0D' | array(1, CAST(NULL AS INT)) | array(0.5f, 0.5f) | token_id=42:"
            + " expert_ids[1] is null",
        "X'0A0B0C0D' | array(1, 2) | CAST(NULL AS ARRAY<FLOAT>) | token_id=42: probs is null",
        "X'0A0B0C0D' | array(1, 2) | array(0.5f) | token_id=42: probs has 1 entries, expected topK"
            + " = 2",
        "X'0A0B0C0D' | array(1, 2) | array(CAST('NaN' AS FLOAT), 0.5f) | token_id=42: probs[0] is"
            + " NaN"
      })
  void badRowFailsTheJobAndCommitsNothing(String hidden, String ids, String probs, String msg) {
    Dataset<Row> good =
        spark.sql(
            "SELECT id AS token_id, X'01020304' AS hidden, array(CAST(id % 8 AS INT), -1) AS"
                + " expert_ids, array(0.5f, 0.5f) AS probs FROM range(0, 400) WHERE id != 42");
    Dataset<Row> bad =
        spark.sql(
            "SELECT 42L AS token_id, "
                + hidden
                + " AS hidden, "
                + ids
                + " AS expert_ids, "
                + probs
                + " AS probs");
    Dataset<Row> tokens = good.unionByName(bad).repartition(4);
    PermuteSpec spec = PermuteSpec.builder(8, 2).hidden(2, DType.BF16).topK(2).build();
    for (Layout layout : Layout.values()) {
      File out = dir.resolve("out-" + layout).toFile();
      Dataset<Row> data =
          layout == Layout.ROWS
              ? MoePrep.permute(tokens, spec).rows()
              : MoePrep.permute(tokens, spec).packed();
      Exception e =
          assertThrows(Exception.class, () -> data.write().parquet(out.getPath()), "must fail");
      assertTrue(causes(e).contains(msg), "message names the token: " + causes(e));
      assertFalse(hasOutput(out.toPath()), "no output was committed under " + out);
    }
  }

  static String causes(Throwable e) {
    StringBuilder b = new StringBuilder();
    for (Throwable t = e; t != null; t = t.getCause()) {
      b.append(t.getMessage()).append(" | ");
    }
    return b.toString();
  }

  static boolean hasOutput(Path p) {
    if (!Files.exists(p)) {
      return false;
    }
    try (Stream<Path> s = Files.walk(p)) {
      return s.anyMatch(
          f ->
              f.getFileName().toString().endsWith(".parquet")
                  || f.getFileName().toString().equals("_SUCCESS"));
    } catch (java.io.IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }
}
