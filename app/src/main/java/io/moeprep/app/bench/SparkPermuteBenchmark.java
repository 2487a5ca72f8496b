package io.moeprep.app.bench;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.element_at;
import static org.apache.spark.sql.functions.floor;
import static org.apache.spark.sql.functions.posexplode;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.util.MutableURLClassLoader;

/**
 * MoePrep's permute (ROWS and PACKED, each with the all-to-all and shuffle-less) against the plain
 * Spark recipe for the same result (posexplode, filter -1, repartition by rank,
 * sortWithinPartitions by batch, expert and token), Parquet to Parquet, same session and data, on
 * {@code local[2]}, every variant written with the same options ({@link MoePrep#PARQUET_OPTIONS}).
 * Prints times, bytes shuffled and written, the stage lines, and the ratios.
 *
 * <p>Variants ({@code only=}): {@code plain}; {@code rows} and {@code packed}, the all-to-all
 * ({@link Partitioning#RANK}: partition r = rank r, written as it is); {@code rows-batch} and
 * {@code packed-batch}, shuffle-less ({@link Partitioning#BATCH}: one shuffle by batch, written
 * {@code partitionBy("ep_rank")} with up to R concurrent writers per task, as {@code bin/moeprep
 * permute} does), which store the same bytes per rank; {@code safetensors}, shuffle-less into the
 * safetensors sink ({@code PermuteOutput.shards()}, one file per (rank, batch) with every tensor;
 * {@code format=noop} measures the shard rows without writing).
 *
 * <p>With {@code rapids=JAR} (the RAPIDS Accelerator jar) the session loads RAPIDS (as {@code
 * spark-submit --jars} would; {@code rapids=loaded} when it was started by {@code spark-submit
 * --jars RAPIDS_JAR,MOEPREP_PLUGIN_JAR}, MoePrep's plugin beside RAPIDS in one class loader, which
 * the columnar plan needs) and two more variants run under it: {@code plain-gpu}, the plain recipe
 * executed by RAPIDS, and {@code columnar}, MoePrep's columnar device plan ({@code
 * PermuteOutput.rows()} under RAPIDS, shuffle-less); every other variant runs with {@code
 * spark.rapids.sql.enabled=false}. A variant may name MoePrep's backend: {@code packed-batch@cuda}.
 *
 * <p>Arguments ({@code key=value}, all optional): {@code n=200000 hidden=1024 topK=8 experts=64
 * ranks=8 tokensPerBatch=8192 dir=/tmp/moeprep-bench master=local[2] runs=1 backend=cpu
 * only=plain,rows,packed,rows-batch,packed-batch,safetensors format=parquet chunkBytes=8388608
 * maxBlockBytes=1073741824 reuseInput=false rapids= rapidsAllocFraction=0.5 gpuTasks=2 codec=}
 * ({@code reuseInput=true} keeps the input of an earlier run of the same shape; {@code gpuTasks} is
 * {@code spark.rapids.sql.concurrentGpuTasks}; {@code codec} the Parquet compression of every
 * variant's output, Spark's default (snappy) when empty, e.g. {@code uncompressed} or {@code
 * zstd}). Run it with the module's classpath and Spark's {@code --add-opens} flags, e.g.
 *
 * <pre>
 * java $OPENS -Xmx8g -cp $(bin/moeprep classpath) \
 *   io.moeprep.app.bench.SparkPermuteBenchmark n=200000
 * </pre>
 */
public final class SparkPermuteBenchmark {
  private SparkPermuteBenchmark() {}

  /** Task metrics summed over the jobs of one measured run. */
  static final class Bytes extends SparkListener {
    final AtomicLong shuffleWritten = new AtomicLong();
    final AtomicLong outputWritten = new AtomicLong();
    final AtomicLong outputRows = new AtomicLong();
    final java.util.List<String> stages =
        java.util.Collections.synchronizedList(new java.util.ArrayList<>());

    @Override
    public void onStageCompleted(org.apache.spark.scheduler.SparkListenerStageCompleted done) {
      var info = done.stageInfo();
      var m = info.taskMetrics();
      long wall =
          info.completionTime().isDefined() && info.submissionTime().isDefined()
              ? (Long) info.completionTime().get() - (Long) info.submissionTime().get()
              : -1;
      stages.add(
          String.format(
              Locale.ROOT,
              "  stage %d (%d tasks): %.1f s wall, task time %.1f s (cpu %.1f s, gc %.1f s,"
                  + " shuffle write %.1f s, shuffle read wait %.1f s), %s",
              info.stageId(),
              info.numTasks(),
              wall / 1e3,
              m.executorRunTime() / 1e3,
              m.executorCpuTime() / 1e9,
              m.jvmGCTime() / 1e3,
              m.shuffleWriteMetrics().writeTime() / 1e9,
              m.shuffleReadMetrics().fetchWaitTime() / 1e3,
              info.name()));
    }

    @Override
    public void onTaskEnd(SparkListenerTaskEnd end) {
      if (end.taskMetrics() == null) {
        return;
      }
      shuffleWritten.addAndGet(end.taskMetrics().shuffleWriteMetrics().bytesWritten());
      outputWritten.addAndGet(end.taskMetrics().outputMetrics().bytesWritten());
      outputRows.addAndGet(end.taskMetrics().outputMetrics().recordsWritten());
    }

    void reset() {
      stages.clear();
      shuffleWritten.set(0);
      outputWritten.set(0);
      outputRows.set(0);
    }
  }

  /**
   * The timing metrics of every operator of the last query that ran (summed over its tasks), read
   * from the executed plan: where the time of a stage goes, operator by operator (RAPIDS' {@code op
   * time} of each GPU operator, MoePrep's UDF inside the one that evaluates it).
   */
  static final class PlanMetrics implements org.apache.spark.sql.util.QueryExecutionListener {
    final java.util.List<String> lines =
        java.util.Collections.synchronizedList(new java.util.ArrayList<>());

    @Override
    public void onSuccess(
        String funcName, org.apache.spark.sql.execution.QueryExecution qe, long durationNs) {
      lines.clear();
      walk(qe.executedPlan(), 2);
    }

    @Override
    public void onFailure(
        String funcName, org.apache.spark.sql.execution.QueryExecution qe, Exception e) {
      lines.clear();
    }

    private void walk(org.apache.spark.sql.execution.SparkPlan p, int indent) {
      if (p instanceof org.apache.spark.sql.execution.adaptive.AdaptiveSparkPlanExec a) {
        walk(a.executedPlan(), indent);
        return;
      }
      if (p instanceof org.apache.spark.sql.execution.adaptive.QueryStageExec q) {
        walk(q.plan(), indent);
        return;
      }
      StringBuilder b = new StringBuilder(" ".repeat(indent)).append(p.nodeName());
      var metrics = scala.jdk.javaapi.CollectionConverters.asJava(p.metrics());
      new java.util.TreeMap<>(metrics)
          .forEach(
              (name, m) -> {
                String type = m.metricType();
                double scale =
                    type.equals("nsTiming") ? 1e9 : type.equals("timing") ? 1e3 : Double.NaN;
                if (!Double.isNaN(scale) && m.value() > 0) {
                  b.append(String.format(Locale.ROOT, ", %s %.2f s", name, m.value() / scale));
                }
              });
      lines.add(b.toString());
      for (var c : scala.jdk.javaapi.CollectionConverters.asJava(p.children())) {
        walk(c, indent + 2);
      }
    }
  }

  record Result(
      String name, double seconds, double cpuSeconds, long shuffled, long written, long rows) {}

  /** CPU time of this whole JVM (every thread: tasks, kernel pools, GC), in seconds. */
  static double processCpuSeconds() {
    var os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime() / 1e9;
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> a = new LinkedHashMap<>();
    a.put("n", "200000");
    a.put("hidden", "1024");
    a.put("topK", "8");
    a.put("experts", "64");
    a.put("ranks", "8");
    a.put("tokensPerBatch", "8192");
    a.put("dir", "/tmp/moeprep-bench");
    a.put("master", "local[2]");
    a.put("runs", "1");
    a.put("backend", "cpu");
    a.put("only", "plain,rows,packed,rows-batch,packed-batch,safetensors");
    a.put("format", "parquet");
    a.put("chunkBytes", Long.toString(8L << 20));
    a.put("maxBlockBytes", Long.toString(1L << 30));
    a.put("reuseInput", "false");
    a.put("rapids", "");
    a.put("rapidsAllocFraction", "0.5");
    a.put("gpuTasks", "2");
    a.put("codec", "");
    a = BenchArgs.parse(a, args);
    long n = Long.parseLong(a.get("n"));
    int h = Integer.parseInt(a.get("hidden"));
    int k = Integer.parseInt(a.get("topK"));
    int e = Integer.parseInt(a.get("experts"));
    int r = Integer.parseInt(a.get("ranks"));
    int tpb = Integer.parseInt(a.get("tokensPerBatch"));
    String dir = a.get("dir");
    int runs = Integer.parseInt(a.get("runs"));
    boolean rapids = !a.get("rapids").isEmpty();
    // rapids=loaded: RAPIDS is on the context class loader already (spark-submit --jars)
    if (rapids && !a.get("rapids").equals("loaded")) {
      // as spark-submit --jars does: RAPIDS adds its per-Spark-version classes to this loader
      java.io.File jar = new java.io.File(a.get("rapids"));
      if (!jar.isFile()) {
        throw new IllegalArgumentException("rapids=" + jar + ": no such file (the RAPIDS jar)");
      }
      Thread.currentThread()
          .setContextClassLoader(
              new MutableURLClassLoader(
                  new java.net.URL[] {jar.toURI().toURL()},
                  SparkPermuteBenchmark.class.getClassLoader()));
    }
    SparkSession.Builder builder =
        SparkSession.builder()
            .master(a.get("master"))
            .appName("moeprep-benchmark")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config(
                "spark.plugins",
                (rapids ? "com.nvidia.spark.SQLPlugin," : "") + "io.moeprep.spark.MoePrepPlugin")
            // partitionBy("ep_rank") without a sort of the task's rows (as bin/moeprep permute)
            .config("spark.sql.maxConcurrentOutputFileWriters", Integer.toString(r));
    if (rapids) {
      builder
          .config("spark.rapids.sql.concurrentGpuTasks", a.get("gpuTasks"))
          // leave device memory to MoePrep's scratch (cuMemAlloc, outside RMM)
          .config("spark.rapids.memory.gpu.allocFraction", a.get("rapidsAllocFraction"))
          .config("spark.rapids.sql.explain", "NOT_ON_GPU");
    }
    SparkSession spark = builder.getOrCreate();
    spark.sparkContext().setLogLevel("WARN");
    Bytes bytes = new Bytes();
    spark.sparkContext().addSparkListener(bytes);
    PlanMetrics planMetrics = new PlanMetrics();
    spark.listenerManager().register(planMetrics);
    System.out.printf(
        Locale.ROOT,
        "MoePrep permute benchmark: N=%d H=%d BF16 K=%d E=%d R=%d tokensPerBatch=%d, %s, %d cores,"
            + " Parquet codec %s, RAPIDS %s (concurrentGpuTasks %s)%n",
        n,
        h,
        k,
        e,
        r,
        tpb,
        a.get("master"),
        Runtime.getRuntime().availableProcessors(),
        a.get("codec").isEmpty() ? "snappy" : a.get("codec"),
        rapids ? "on" : "off",
        a.get("gpuTasks"));
    long t0 = System.nanoTime();
    String input = dir + "/tokens";
    String shape = n + " " + h + " " + k + " " + e;
    java.nio.file.Path shapeFile = java.nio.file.Path.of(dir, "tokens.shape");
    if (Boolean.parseBoolean(a.get("reuseInput"))
        && java.nio.file.Files.isRegularFile(shapeFile)
        && java.nio.file.Files.readString(shapeFile).equals(shape)) {
      System.out.println("input reused: " + input);
    } else {
      TokenData.generate(spark, 20261126L, n, 8, h, DType.BF16, k, e, 0.0)
          .write()
          .mode(SaveMode.Overwrite)
          .parquet(input);
      java.nio.file.Files.writeString(shapeFile, shape);
      System.out.printf(Locale.ROOT, "input written in %.1f s%n", (System.nanoTime() - t0) / 1e9);
    }
    PermuteSpec.Builder spec =
        PermuteSpec.builder(e, r)
            .hidden(h, DType.BF16)
            .topK(k)
            .tokensPerBatch(tpb)
            .backend(BackendChoice.parse(a.get("backend")))
            .chunkBytes(Long.parseLong(a.get("chunkBytes")))
            .maxBlockBytes(Long.parseLong(a.get("maxBlockBytes")));
    Map<String, Result> best = new LinkedHashMap<>();
    for (int run = 0; run < runs; run++) {
      for (String which : a.get("only").split(",")) {
        // NAME or NAME@BACKEND (cpu, cuda, auto): the variant, and MoePrep's backend for it
        String[] nb = which.split("@", 2);
        String name = nb[0];
        boolean gpuSql = name.equals("plain-gpu") || name.equals("columnar");
        // the columnar plan is MoePrep's GPU path: backend cpu would keep MoePrep off the GPU
        String backend =
            nb.length > 1 ? nb[1] : name.equals("columnar") ? "cuda" : a.get("backend");
        spec.backend(BackendChoice.parse(backend));
        if (gpuSql && !rapids) {
          throw new IllegalArgumentException(which + " needs rapids=<the RAPIDS Accelerator jar>");
        }
        if (rapids) { // RAPIDS runs the SQL of these variants only
          spark.conf().set("spark.rapids.sql.enabled", Boolean.toString(gpuSql));
        }
        Dataset<Row> in = spark.read().parquet(input);
        boolean shards = name.equals("safetensors");
        Partitioning p =
            name.endsWith("-batch") || shards || name.equals("columnar")
                ? Partitioning.BATCH
                : Partitioning.RANK;
        spec.partitioning(p);
        Dataset<Row> out =
            switch (name) {
              case "plain", "plain-gpu" -> plainRecipe(in, e / r, tpb);
              case "rows", "rows-batch" ->
                  MoePrep.permute(in, spec.layout(Layout.ROWS).build()).data();
              case "packed", "packed-batch" ->
                  MoePrep.permute(in, spec.layout(Layout.PACKED).build()).data();
              case "safetensors" -> MoePrep.permute(in, spec.build()).shards();
              case "columnar" -> columnar(MoePrep.permute(in, spec.layout(Layout.ROWS).build()));
              default ->
                  throw new IllegalArgumentException(
                      "only: plain, plain-gpu, rows, packed, rows-batch, packed-batch,"
                          + " safetensors, columnar (each NAME or NAME@BACKEND)");
            };
        waitForListeners(spark);
        bytes.reset();
        long start = System.nanoTime();
        double cpuStart = processCpuSeconds();
        long kernelStart = io.moeprep.spark.exec.ExecutorRuntime.KERNEL_NANOS.getCount();
        // the same writer options for every variant (they suit large binary values)
        var writer = out.write().mode(SaveMode.Overwrite).options(MoePrep.PARQUET_OPTIONS);
        if (!a.get("codec").isEmpty()) { // Spark's default is snappy
          writer = writer.option("compression", a.get("codec"));
        }
        boolean noop = a.get("format").equals("noop");
        if (p == Partitioning.BATCH && !shards && !noop) {
          writer = writer.partitionBy("ep_rank");
        }
        String format = shards && !noop ? "moeprep-safetensors" : a.get("format");
        writer.format(format).save(dir + "/out-" + which);
        double s = (System.nanoTime() - start) / 1e9;
        double cpu = processCpuSeconds() - cpuStart;
        waitForListeners(spark);
        long written = bytes.outputWritten.get();
        if (shards && !noop) { // a DataSource V2 writer reports no output metrics: count the files
          org.apache.hadoop.fs.Path o = new org.apache.hadoop.fs.Path(dir + "/out-" + which);
          written =
              o.getFileSystem(spark.sparkContext().hadoopConfiguration())
                  .getContentSummary(o)
                  .getLength();
        }
        Result res =
            new Result(which, s, cpu, bytes.shuffleWritten.get(), written, bytes.outputRows.get());
        System.out.printf(
            Locale.ROOT,
            "run %d %-7s %8.1f s  cpu %8.1f s  shuffled %9.1f MiB  written %9.1f MiB  rows %,d%n",
            run,
            which,
            s,
            cpu,
            res.shuffled / 1048576.0,
            res.written / 1048576.0,
            res.rows);
        bytes.stages.forEach(System.out::println);
        long kernelNanos =
            io.moeprep.spark.exec.ExecutorRuntime.KERNEL_NANOS.getCount() - kernelStart;
        if (kernelNanos > 0) {
          System.out.printf(
              Locale.ROOT,
              "  MoePrep's kernel calls (kernelNanos, summed over tasks): %.2f s%n",
              kernelNanos / 1e9);
        }
        System.out.println("  operators (timing metrics summed over tasks):");
        planMetrics.lines.forEach(System.out::println);
        Result prev = best.get(which);
        if (prev == null || res.seconds < prev.seconds) {
          best.put(which, res);
        }
      }
    }
    Result plain = best.get("plain");
    Result plainGpu = best.get("plain-gpu");
    if (plain == null || (plainGpu != null && plainGpu.seconds < plain.seconds)) {
      plain = plainGpu;
    }
    System.out.println();
    System.out.println(
        "speed-up columns: against the best plain recipe"
            + (plain == null ? " (none run)" : " (" + plain.name + ")"));
    System.out.println(
        "| run | time (s) | CPU (s) | shuffled (MiB) | written (MiB) | rows written |"
            + " speed-up vs plain (time) | (CPU) |");
    System.out.println("|---|---|---|---|---|---|---|---|");
    for (Result res : best.values()) {
      System.out.printf(
          Locale.ROOT,
          "| %s | %.1f | %.1f | %.1f | %.1f | %,d | %s | %s |%n",
          res.name,
          res.seconds,
          res.cpuSeconds,
          res.shuffled / 1048576.0,
          res.written / 1048576.0,
          res.rows,
          plain == null ? "-" : String.format(Locale.ROOT, "%.2fx", plain.seconds / res.seconds),
          plain == null
              ? "-"
              : String.format(Locale.ROOT, "%.2fx", plain.cpuSeconds / res.cpuSeconds));
    }
    Result columnar = best.get("columnar");
    if (columnar == null) {
      columnar = best.get("columnar@cuda");
    }
    Result cpuBest = null;
    for (Result res : best.values()) {
      boolean moePrepCpu =
          !res.name.startsWith("plain")
              && !res.name.equals("columnar")
              && (res.name.endsWith("@cpu")
                  || (!res.name.contains("@") && a.get("backend").equals("cpu")));
      if (moePrepCpu && (cpuBest == null || res.seconds < cpuBest.seconds)) {
        cpuBest = res;
      }
    }
    if (columnar != null && cpuBest != null) {
      System.out.printf(
          Locale.ROOT,
          "MoePrep GPU path (columnar, %.1f s) against MoePrep's best CPU path (%s, %.1f s): %.2fx%n",
          columnar.seconds,
          cpuBest.name,
          cpuBest.seconds,
          cpuBest.seconds / columnar.seconds);
    }
    spark.stop();
  }

  /** The permute's ROWS output as the columnar plan; fails when the permute did not take it. */
  static Dataset<Row> columnar(PermuteOutput out) {
    if (out.columnarReason() != null) {
      throw new IllegalStateException("no columnar plan: " + out.columnarReason());
    }
    return out.rows();
  }

  /** The plain Spark recipe: one row per kept slot, grouped by rank, sorted like the kernel. */
  static Dataset<Row> plainRecipe(Dataset<Row> in, int expertsPerRank, int tokensPerBatch) {
    return in.select(
            col("token_id"),
            col("hidden"),
            col("probs"),
            posexplode(col("expert_ids")).as(new String[] {"slot", "expert"}))
        .where(col("expert").geq(0))
        .withColumn("ep_rank", floor(col("expert").divide(expertsPerRank)).cast("int"))
        .withColumn("batch", floor(col("token_id").divide(tokensPerBatch)))
        .withColumn("prob", element_at(col("probs"), col("slot").plus(1)))
        .repartition(col("ep_rank"))
        .sortWithinPartitions("batch", "expert", "token_id")
        .select("ep_rank", "batch", "expert", "token_id", "slot", "prob", "hidden");
  }

  private static void waitForListeners(SparkSession spark) throws Exception {
    spark.sparkContext().listenerBus().waitUntilEmpty();
  }
}
