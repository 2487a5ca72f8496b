package io.moeprep.spark.rapids;

import ai.rapids.cudf.Table;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.api.RapidsPermute;
import io.moeprep.spark.exec.ExecutorRuntime;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.SparkSession;

/**
 * The application of {@link RapidsGpuSessionTest}, started by {@code spark-submit} ({@code
 * SparkSubmit}, local mode) with the RAPIDS jar in {@code --jars}, as a user would: a session with
 * the RAPIDS Accelerator executing on the GPU and MoePrep's plugin permutes {@link
 * RapidsExplainOnlyTest#tokens} through {@link RapidsPermute#tables} (the {@code ColumnarRdd}
 * route) and writes to {@code args[0]} the route, the counters and the rows of the cudf tables (one
 * line per row, see {@link RapidsExplainOnlyTest#line}), copied to the host here only to be
 * compared.
 */
public final class RapidsGpuSessionApp {
  private RapidsGpuSessionApp() {}

  /** Per rank partition: each cudf table's rows as text, each table closed once read. */
  static final class TableLines implements FlatMapFunction<Iterator<Table>, String> {
    private static final long serialVersionUID = 1L;
    private final long rowBytes;

    TableLines(long rowBytes) {
      this.rowBytes = rowBytes;
    }

    @Override
    public Iterator<String> call(Iterator<Table> tables) {
      List<String> out = new ArrayList<>();
      long n = 0;
      while (tables.hasNext()) {
        try (Table t = tables.next()) {
          out.addAll(CudfGpuChecks.lines(t, rowBytes));
          n++;
        }
      }
      out.add("#tables " + n);
      return out.iterator();
    }
  }

  public static void main(String[] args) throws Exception {
    SparkSession spark =
        RapidsExplainOnlyApp.rapidsSession("moeprep-rapids-gpu")
            .config("spark.rapids.sql.enabled", "true")
            // args[1] (optional): another mode, to check the set-up on a machine without a GPU
            .config("spark.rapids.sql.mode", args.length > 1 ? args[1] : "executeOnGPU")
            // leave device memory to MoePrep's scratch (cuMemAlloc, outside RMM)
            .config("spark.rapids.memory.gpu.allocFraction", "0.5")
            .config("spark.moeprep.backend", "cuda")
            .getOrCreate();
    List<String> out = new ArrayList<>();
    try {
      PermuteOutput p = RapidsExplainOnlyApp.permuteTokens(spark, out);
      if (!p.route().usesCudf()) {
        throw new IllegalStateException("no cudf route: " + p.executionPath());
      }
      List<String> got =
          RapidsPermute.tables(p)
              .mapPartitions(new TableLines(p.spec().shape().rowBytes()))
              .collect();
      List<String> rows = new ArrayList<>();
      long tables = 0;
      for (String line : got) {
        if (line.startsWith("#tables ")) {
          tables += Long.parseLong(line.substring("#tables ".length()));
        } else {
          rows.add(line);
        }
      }
      rows.sort(null);
      out.add("tables=" + tables);
      out.add("gpuBatches=" + ExecutorRuntime.GPU_BATCHES.getCount());
      out.add("cpuBatches=" + ExecutorRuntime.CPU_BATCHES.getCount());
      // the columnar plan of the same tokens (partitioning=batch), run by RAPIDS on the GPU
      long gpu0 = ExecutorRuntime.GPU_BATCHES.getCount();
      long cpu0 = ExecutorRuntime.CPU_BATCHES.getCount();
      out.add(
          "columnarReason="
              + RapidsExplainOnlyApp.columnarPlan(
                  spark, Path.of(args[0]).resolveSibling("columnar")));
      out.add("columnarGpuBatches=" + (ExecutorRuntime.GPU_BATCHES.getCount() - gpu0));
      out.add("columnarCpuBatches=" + (ExecutorRuntime.CPU_BATCHES.getCount() - cpu0));
      out.add("rows=" + rows.size());
      out.addAll(rows);
    } finally {
      spark.stop();
    }
    Files.write(Path.of(args[0]), out, StandardCharsets.UTF_8);
  }
}
