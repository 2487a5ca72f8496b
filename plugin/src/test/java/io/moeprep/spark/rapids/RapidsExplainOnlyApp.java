package io.moeprep.spark.rapids;

import io.moeprep.spark.MoePrepPlugin;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.api.RapidsPermute;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.Partitioning;
import java.io.File;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.util.MutableURLClassLoader;

/**
 * The child JVM of {@link RapidsExplainOnlyTest}: a local session with the RAPIDS Accelerator in
 * {@code spark.rapids.sql.mode=explainOnly} and MoePrep's plugin, which permutes {@link
 * RapidsExplainOnlyTest#tokens} and writes to {@code args[1]} the route, the backend counters and
 * the ROWS output (one line per row, see {@link RapidsExplainOnlyTest#line}).
 *
 * <p>As under {@code spark-submit --jars}, the RAPIDS jar ({@code args[0]}) is on a mutable class
 * loader that is the context class loader: the RAPIDS shim loader adds its per-Spark-version
 * classes to that loader, and cannot with the JVM's application class loader.
 */
public final class RapidsExplainOnlyApp {
  private RapidsExplainOnlyApp() {}

  /** A session builder with the RAPIDS Accelerator and MoePrep's plugin, for these tests. */
  static SparkSession.Builder rapidsSession(String name) {
    return SparkSession.builder()
        .appName(name)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "3")
        .config("spark.plugins", RapidsRoute.SQL_PLUGIN + "," + MoePrepPlugin.class.getName())
        .config("spark.rapids.sql.explain", "NOT_ON_GPU")
        .config("spark.storage.exceptionOnPinLeak", "true");
  }

  /** Permutes {@link RapidsExplainOnlyTest#tokens} and notes the route and its path in out. */
  static PermuteOutput permuteTokens(SparkSession spark, List<String> out) {
    PermuteOutput p =
        MoePrep.permute(
            RapidsExplainOnlyTest.tokens().toDataFrame(spark, true), RapidsExplainOnlyTest.spec());
    out.add("route=" + p.route().path());
    out.add("path=" + p.executionPath().replaceAll("\\s+", " "));
    return p;
  }

  /**
   * The permute under {@code partitioning=batch} of the tokens read back from Parquet, whose {@code
   * rows()} is the columnar plan: writes to {@code dir} what RAPIDS would run on the GPU ({@code
   * gpu-plan.txt}, RAPIDS' {@code ExplainPlan.explainPotentialGpuPlan}), Spark's physical plan
   * ({@code physical-plan.txt}) and the rows ({@code rows.txt}); returns {@code columnarReason()}.
   */
  static String columnarPlan(SparkSession spark, Path dir) throws Exception {
    Files.createDirectories(dir);
    String parquet = dir.resolve("tokens.parquet").toString();
    RapidsExplainOnlyTest.tokens().toDataFrame(spark, true).write().parquet(parquet);
    PermuteOutput p =
        MoePrep.permute(
            spark.read().parquet(parquet),
            RapidsExplainOnlyTest.spec().toBuilder().partitioning(Partitioning.BATCH).build());
    Dataset<Row> rows = p.rows();
    Object gpuPlan =
        Class.forName(
                "com.nvidia.spark.rapids.ExplainPlan",
                true,
                Thread.currentThread().getContextClassLoader())
            .getMethod("explainPotentialGpuPlan", Dataset.class, String.class)
            .invoke(null, rows, "ALL");
    Files.writeString(dir.resolve("gpu-plan.txt"), String.valueOf(gpuPlan));
    List<String> lines = RapidsExplainOnlyTest.lines(rows.collectAsList());
    Files.write(dir.resolve("rows.txt"), lines, StandardCharsets.UTF_8);
    // after the run: adaptive execution's final plan, with RAPIDS' operators where they ran
    Files.writeString(
        dir.resolve("physical-plan.txt"), rows.queryExecution().executedPlan().toString());
    return p.columnarReason();
  }

  public static void main(String[] args) throws Exception {
    URL jar = new File(args[0]).toURI().toURL();
    ClassLoader parent = RapidsExplainOnlyApp.class.getClassLoader();
    Thread.currentThread()
        .setContextClassLoader(new MutableURLClassLoader(new URL[] {jar}, parent));
    SparkSession spark =
        rapidsSession("moeprep-rapids-explain-only")
            .master("local[2]")
            .config("spark.rapids.sql.mode", "explainOnly")
            .config("spark.moeprep.backend", "auto")
            .getOrCreate();
    List<String> out = new ArrayList<>();
    try {
      PermuteOutput p = permuteTokens(spark, out);
      String tables;
      try {
        RapidsPermute.tables(p);
        tables = "tables: no error";
      } catch (IllegalStateException e) {
        tables = "tables: " + e.getMessage().replaceAll("\\s+", " ");
      }
      out.add(tables);
      List<String> rows = RapidsExplainOnlyTest.lines(p.rows().collectAsList());
      out.add("cpuBatches=" + ExecutorRuntime.CPU_BATCHES.getCount());
      out.add("gpuBatches=" + ExecutorRuntime.GPU_BATCHES.getCount());
      out.add("fallbackReason=" + ExecutorRuntime.fallbackReason().replaceAll("\\s+", " "));
      out.add("columnarReason=" + columnarPlan(spark, Path.of(args[1]).resolveSibling("columnar")));
      out.add("rows=" + rows.size());
      out.addAll(rows);
    } finally {
      spark.stop();
    }
    Files.write(Path.of(args[1]), out, StandardCharsets.UTF_8);
  }
}
