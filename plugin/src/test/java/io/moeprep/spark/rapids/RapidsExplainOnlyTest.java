package io.moeprep.spark.rapids;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.PermuteSpec;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * CI without a GPU: a Spark session with the RAPIDS Accelerator 26.08.1 in {@code
 * spark.rapids.sql.mode=explainOnly} (started in a child JVM, {@link RapidsExplainOnlyApp}, so that
 * its plugin does not meet this JVM's shared session). MoePrep must detect RAPIDS, plan the cudf
 * route and say so, refuse the cudf tables (nothing may run on a GPU in that mode), and still give
 * exactly the rows of the CPU backend in a plain session.
 */
@Tag("rapids-explain")
class RapidsExplainOnlyTest {
  private static final long TIMEOUT_S = 300;

  /** The input of both sessions: 3 batches, 16 experts over 4 ranks, K = 4, H = 67 bf16. */
  static TokenBatch tokens() {
    return TokenBatch.random(new SplittableRandom(7), 3, 97, 67, DType.BF16, 4, 16, 0.2);
  }

  /** The permute of both sessions: per-expert capacity 13 with padding, backend from the conf. */
  static PermuteSpec spec() {
    return PermuteSpec.builder(16, 4)
        .hidden(67, DType.BF16)
        .topK(4)
        .perExpertCapacity(13, true)
        .build();
  }

  /** ROWS output rows as text, sorted by (rank, batch, row). */
  static List<String> lines(List<Row> rows) {
    List<String> out = new ArrayList<>();
    for (Row r : rows) {
      out.add(line(r));
    }
    out.sort(null);
    return out;
  }

  /**
   * A child session's result file: header lines (those of the form {@code key=value} also in {@code
   * values}), then {@code rows=N} and N rows.
   */
  record SessionResult(List<String> header, Map<String, String> values, List<String> rows) {
    static SessionResult read(Path file) throws IOException {
      List<String> got = Files.readAllLines(file, StandardCharsets.UTF_8);
      int rowsAt = 0;
      while (!got.get(rowsAt).startsWith("rows=")) {
        rowsAt++;
      }
      Map<String, String> v = new HashMap<>();
      for (String line : got.subList(0, rowsAt)) {
        int eq = line.indexOf('=');
        if (eq > 0) {
          v.putIfAbsent(line.substring(0, eq), line.substring(eq + 1));
        }
      }
      int n = Integer.parseInt(got.get(rowsAt).substring("rows=".length()));
      return new SessionResult(got.subList(0, rowsAt), v, got.subList(rowsAt + 1, rowsAt + 1 + n));
    }

    /** Fails unless the rows are exactly {@code expected}, in order. */
    void assertRows(List<String> expected) {
      assertEquals(expected.size(), rows.size(), "rows");
      for (int i = 0; i < expected.size(); i++) {
        assertEquals(expected.get(i), rows.get(i), "row " + i + " (rank batch row ...)");
      }
    }
  }

  /** One ROWS row as {@link CudfGpuChecks.OutRow#line} text. */
  static String line(Row r) {
    return new CudfGpuChecks.OutRow(
            r.getInt(0),
            r.getLong(1),
            r.getInt(2),
            r.getInt(3),
            r.getInt(4),
            r.getLong(5),
            r.getInt(6),
            r.isNullAt(7) ? null : r.getFloat(7),
            (byte[]) r.get(8))
        .line();
  }

  /** The lines of {@link #tokens} permuted by {@link #spec} on the CPU in a plain session. */
  static List<String> cpuLines() {
    PermuteSpec cpuSpec = spec().toBuilder().backend(BackendChoice.CPU).build();
    PermuteOutput cpu = MoePrep.permute(tokens().toDataFrame(SparkSessions.local(), true), cpuSpec);
    assertEquals(RapidsRoute.Path.CPU, cpu.route().path());
    List<String> expected = lines(cpu.rows().collectAsList());
    assertTrue(expected.size() > 100, "a non-trivial output: " + expected.size() + " rows");
    return expected;
  }

  /** The RAPIDS jar: {@code -Dmoeprep.rapids.jar}, else a class path entry named like it. */
  static String rapidsJar() {
    String jar = System.getProperty("moeprep.rapids.jar", "");
    if (!jar.isEmpty()) {
      return jar;
    }
    return ChildJvm.classPath(f -> !f.getName().startsWith("rapids-4-spark")).stream()
        .findFirst()
        .orElse("");
  }

  /**
   * The columnar plan of the child session ({@link RapidsExplainOnlyApp#columnarPlan}): taken,
   * every operator from the Parquet scan to the explode would run on the GPU (so RAPIDS inserts no
   * row transition around the hidden column), no row task in Spark's plan, and the rows (computed
   * by the UDF's row form) equal to the CPU route's.
   */
  static void assertColumnarPlan(String reason, Path dir, List<String> expected)
      throws IOException {
    assertEquals("null", reason, "the columnar plan was not taken");
    String gpuPlan = Files.readString(dir.resolve("gpu-plan.txt"));
    for (String step :
        List.of(
            "*Exec <FileSourceScanExec> will run on GPU",
            "*Exec <ShuffleExchangeExec> will run on GPU",
            "*Exec <ObjectHashAggregateExec> will run on GPU",
            "*Exec <GenerateExec> will run on GPU",
            "*Expression <ScalaUDF> " + ColumnarPermute.UDF_NAME)) {
      assertTrue(gpuPlan.contains(step), "missing '" + step + "' in RAPIDS' plan:\n" + gpuPlan);
    }
    for (String line : gpuPlan.split("\n")) {
      String l = line.trim();
      assertTrue(
          !l.startsWith("!") && !l.contains("cannot run on GPU") && !l.contains("not run on GPU"),
          "a step off the GPU: " + l + "\n" + gpuPlan);
      if (l.contains("<ScalaUDF>")) {
        assertTrue(l.endsWith("will run on GPU"), l);
      }
    }
    String physical = Files.readString(dir.resolve("physical-plan.txt"));
    assertTrue(!physical.contains("MapPartitions"), "a row task in the plan:\n" + physical);
    SessionResult columnar =
        new SessionResult(
            List.of(),
            Map.of(),
            Files.readAllLines(dir.resolve("rows.txt"), StandardCharsets.UTF_8));
    columnar.assertRows(expected);
    System.out.println(
        "RAPIDS session, columnar plan: every step on the GPU; "
            + expected.size()
            + " rows equal to the CPU API");
  }

  @Test
  void explainOnlySessionPlansTheCudfRouteAndComputesTheCpuResult() throws Exception {
    String jar = rapidsJar();
    Assumptions.assumeTrue(
        !jar.isEmpty() && new File(jar).isFile(),
        "no RAPIDS jar at '" + jar + "' (fetched by the build unless -Dmoeprep.rapids.skip=true)");
    Path dir = Files.createTempDirectory("moeprep-rapids");
    Path result = dir.resolve("result.txt");
    // this JVM's class path without cudf-java: in a RAPIDS session cudf comes from the RAPIDS jar
    ChildJvm.Result child =
        ChildJvm.run(
            ChildJvm.classPath(f -> f.getName().startsWith("cudf-")),
            "2g",
            List.of(RapidsExplainOnlyApp.class.getName(), jar, result.toString()),
            dir.resolve("child.log"),
            TIMEOUT_S);
    String childLog = child.log();
    String tail = child.tail(6000);
    assertTrue(
        child.finished(), "the RAPIDS session did not finish in " + TIMEOUT_S + " s:\n" + tail);
    assertEquals(0, child.exitCode(), "the RAPIDS session failed:\n" + tail);
    // RAPIDS itself started, in explain-only mode
    assertTrue(
        childLog.contains("RAPIDS Accelerator is in explain only mode"),
        "RAPIDS did not report explain-only mode:\n" + tail);
    // MoePrep saw it and said so, in the log and in the plan's path
    assertTrue(
        childLog.contains("moeprep: MoePrep path RAPIDS_EXPLAIN_ONLY"),
        "MoePrep did not log the explain-only route:\n" + tail);
    SessionResult got = SessionResult.read(result);
    Map<String, String> v = got.values();
    assertEquals("RAPIDS_EXPLAIN_ONLY", v.get("route"));
    assertTrue(v.get("path").contains(RapidsRoute.COLUMNAR_RDD), v.get("path"));
    String tables =
        got.header().stream().filter(l -> l.startsWith("tables: ")).findFirst().orElse("");
    assertTrue(tables.startsWith("tables: the cudf route is not available"), tables);
    assertTrue(Long.parseLong(v.get("cpuBatches")) > 0, "the rows ran on the CPU backend: " + v);
    assertEquals("0", v.get("gpuBatches"), "nothing ran on a GPU: " + v);
    // the same permute in this JVM's plain session, on the CPU backend
    List<String> expected = cpuLines();
    got.assertRows(expected);
    assertColumnarPlan(v.get("columnarReason"), dir.resolve("columnar"), expected);
    int n = got.rows().size();
    System.out.println(
        "RAPIDS explainOnly session: "
            + v.get("path")
            + "; "
            + n
            + " rows equal to the CPU API; cpuBatches="
            + v.get("cpuBatches")
            + ", gpuBatches="
            + v.get("gpuBatches")
            + ", fallback: "
            + v.get("fallbackReason")
                .substring(0, Math.min(160, v.get("fallbackReason").length())));
  }
}
