package io.moeprep.app.bench;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.workload.SyntheticRouting;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.sink.SafetensorsSink;
import io.moeprep.spark.sink.ShardSchema;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Writes the same shard DataFrame ({@link ShardSchema#SHARDS}, cached in memory) as Parquet and
 * through the safetensors sink ({@value SafetensorsSink#FORMAT}), on {@code local[2]}, and prints
 * the wall time, the JVM's CPU time (and its child processes') and the bytes written of each, with
 * {@code format=noop} (read the cache, write nothing) as the floor. The shards are CPU permutes of
 * random BF16 tokens with uniform top-k routing, one (rank, batch) per {@code ranks x batches},
 * each cut into parts of at most {@code partBytes} of {@code permuted}.
 *
 * <p>Arguments ({@code key=value}, all optional): {@code tokens=8192 hidden=1024 topK=8 experts=64
 * ranks=8 batches=12 partBytes=4194304 partitions=8 runs=3 dir=/tmp/moeprep-sink-bench
 * master=local[2] clean=false} ({@code clean=true} deletes each output once measured, e.g. for a
 * {@code dir} on tmpfs). The defaults give 1.6 GB of permuted rows. Run it with the module's
 * classpath and Spark's {@code --add-opens} flags, e.g.
 *
 * <pre>
 * java $OPENS -Xmx8g -cp $(bin/moeprep classpath) io.moeprep.app.bench.SinkBenchmark
 * </pre>
 */
public final class SinkBenchmark {
  private SinkBenchmark() {}

  /** Makes the shard rows of the (rank, batch)es numbered by the input ids, in tasks. */
  static final class Shards implements FlatMapFunction<Long, Row> {
    private static final long serialVersionUID = 1L;
    final int tokens;
    final int hidden;
    final int topK;
    final int experts;
    final int ranks;
    final int partBytes;

    Shards(Map<String, String> a) {
      tokens = Integer.parseInt(a.get("tokens"));
      hidden = Integer.parseInt(a.get("hidden"));
      topK = Integer.parseInt(a.get("topK"));
      experts = Integer.parseInt(a.get("experts"));
      ranks = Integer.parseInt(a.get("ranks"));
      partBytes = Integer.parseInt(a.get("partBytes"));
    }

    @Override
    public Iterator<Row> call(Long id) {
      int rank = (int) (id % ranks);
      long batch = id / ranks;
      SplittableRandom rnd = new SplittableRandom(id * 7919 + 17);
      long rowBytes = DType.BF16.rowBytes(hidden);
      List<Row> out = new ArrayList<>();
      try (HostBuffer t = HostBuffer.allocate(tokens * rowBytes);
          HostBuffer r = HostBuffer.allocate(4L * tokens * topK);
          HostBuffer p = HostBuffer.allocate(4L * tokens * topK)) {
        for (long i = 0; i < t.size(); i += 8) {
          t.putLong(i, rnd.nextLong());
        }
        SyntheticRouting.fill(rnd, r, p, tokens, topK, experts, 0.0);
        PermuteInput in = new PermuteInput(t, tokens, hidden, DType.BF16, r, topK, p);
        try (PermuteResult res =
            MoeKernels.create(BackendChoice.CPU)
                .permute(in, PermuteOptions.forRank(experts, ranks, rank))) {
          long rows = res.numOut();
          int rowsPerPart = (int) Math.max(1, partBytes / rowBytes);
          int parts = (int) Math.max(1, (rows + rowsPerPart - 1) / rowsPerPart);
          long[] ids = new long[tokens];
          for (int i = 0; i < tokens; i++) {
            ids[i] = batch * tokens + i;
          }
          Map<String, String> meta = new LinkedHashMap<>();
          meta.put("ep_size", Integer.toString(ranks));
          meta.put("capacity", "none");
          for (int part = 0; part < parts; part++) {
            long a = (long) part * rowsPerPart;
            long b = Math.min(rows, a + rowsPerPart);
            boolean first = part == 0;
            out.add(
                RowFactory.create(
                    rank,
                    batch,
                    part,
                    parts,
                    rows,
                    (long) tokens,
                    hidden,
                    topK,
                    experts,
                    "bf16",
                    res.permuted().toBytes(a * rowBytes, (b - a) * rowBytes),
                    res.sourceToken().toBytes(8 * a, 8 * (b - a)),
                    res.sourceSlot().toBytes(8 * a, 8 * (b - a)),
                    res.permutedProbs().toBytes(4 * a, 4 * (b - a)),
                    first ? res.rowIdMap().toBytes(0, res.rowIdMap().size()) : null,
                    first ? longs(res.tokensPerExpert()) : null,
                    first ? longs(res.layout().offsets()) : null,
                    first ? longs(ids) : null,
                    first ? CollectionConverters.asScala(meta) : null));
          }
        }
      }
      return out.iterator();
    }

    private static byte[] longs(long[] v) {
      ByteBuffer b = ByteBuffer.allocate(8 * v.length).order(ByteOrder.LITTLE_ENDIAN);
      for (long x : v) {
        b.putLong(x);
      }
      return b.array();
    }
  }

  private static double cpuSeconds() {
    var os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime() / 1e9;
  }

  /**
   * CPU seconds of the processes this JVM started and reaped (Linux: {@code /proc/self/stat} {@code
   * cutime + cstime}, at 100 ticks a second), e.g. the {@code chmod} that Hadoop's local file
   * system runs for each file and directory it creates without its native library; 0 elsewhere.
   */
  private static double childCpuSeconds() {
    try {
      String stat = Files.readString(Path.of("/proc/self/stat"));
      String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
      return (Long.parseLong(f[13]) + Long.parseLong(f[14])) / 100.0;
    } catch (IOException | RuntimeException e) {
      return 0;
    }
  }

  private static long bytesUnder(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return 0;
    }
    try (Stream<Path> s = Files.walk(dir)) {
      return s.filter(Files::isRegularFile)
          .filter(p -> !p.getFileName().toString().endsWith(".crc"))
          .mapToLong(
              p -> {
                try {
                  return Files.size(p);
                } catch (IOException e) {
                  throw new java.io.UncheckedIOException(e);
                }
              })
          .sum();
    }
  }

  private static void deleteTree(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> s = Files.walk(dir)) {
      for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
        Files.delete(p);
      }
    }
  }

  /** Runs the benchmark; prints one line per run and a summary. */
  public static void main(String[] args) throws IOException {
    Map<String, String> a = new LinkedHashMap<>();
    a.put("tokens", "8192");
    a.put("hidden", "1024");
    a.put("topK", "8");
    a.put("experts", "64");
    a.put("ranks", "8");
    a.put("batches", "12");
    a.put("partBytes", Integer.toString(4 << 20));
    a.put("partitions", "8");
    a.put("runs", "3");
    a.put("dir", "/tmp/moeprep-sink-bench");
    a.put("master", "local[2]");
    a.put("clean", "false");
    a = BenchArgs.parse(a, args);
    SparkSession spark =
        SparkSession.builder()
            .master(a.get("master"))
            .appName("moeprep-sink-bench")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .getOrCreate();
    spark.sparkContext().setLogLevel("WARN");
    long groups = Long.parseLong(a.get("ranks")) * Long.parseLong(a.get("batches"));
    Dataset<Row> shards =
        spark
            .range(0, groups, 1, Integer.parseInt(a.get("partitions")))
            .flatMap(new Shards(a), Encoders.row(ShardSchema.SHARDS))
            .cache();
    long start = System.nanoTime();
    long rows = shards.count();
    Row sums = shards.selectExpr("sum(length(permuted))").first();
    System.out.printf(
        Locale.ROOT,
        "input: %d (rank, batch)es, %d shard rows, %.2f GB of permuted rows, cached in %.1f s%n",
        groups,
        rows,
        sums.getLong(0) / 1e9,
        (System.nanoTime() - start) / 1e9);
    Path dir = Path.of(a.get("dir"));
    Map<String, List<double[]>> results = new LinkedHashMap<>();
    int runs = Integer.parseInt(a.get("runs"));
    for (int run = 0; run < runs; run++) {
      for (String variant : List.of("noop", "parquet", "safetensors")) {
        Path out = dir.resolve(variant);
        double cpu0 = cpuSeconds();
        double child0 = childCpuSeconds();
        long t0 = System.nanoTime();
        switch (variant) {
          case "noop" -> shards.write().format("noop").mode(SaveMode.Overwrite).save();
          case "parquet" ->
              shards
                  .write()
                  .options(MoePrep.PARQUET_OPTIONS)
                  .mode(SaveMode.Overwrite)
                  .parquet(out.toString());
          default ->
              shards
                  .write()
                  .format(SafetensorsSink.FORMAT)
                  .mode(SaveMode.Overwrite)
                  .save(out.toString());
        }
        double wall = (System.nanoTime() - t0) / 1e9;
        double cpu = cpuSeconds() - cpu0;
        double child = childCpuSeconds() - child0;
        long written = bytesUnder(out);
        results
            .computeIfAbsent(variant, k -> new ArrayList<>())
            .add(new double[] {wall, cpu, child});
        System.out.printf(
            Locale.ROOT,
            "run %d %-11s %6.2f s wall, %6.2f s cpu (+ %.2f s in child processes), %.2f GB"
                + " written%n",
            run + 1,
            variant,
            wall,
            cpu,
            child,
            written / 1e9);
        if (Boolean.parseBoolean(a.get("clean"))) {
          deleteTree(out);
        }
      }
    }
    System.out.println("best of " + runs + " (wall, JVM cpu, child cpu):");
    for (Map.Entry<String, List<double[]>> e : results.entrySet()) {
      double[] best = new double[3];
      for (int i = 0; i < 3; i++) {
        int c = i;
        best[i] = e.getValue().stream().mapToDouble(x -> x[c]).min().orElseThrow();
      }
      System.out.printf(
          Locale.ROOT,
          "  %-11s %6.2f s, %6.2f s, %6.2f s%n",
          e.getKey(),
          best[0],
          best[1],
          best[2]);
    }
    spark.stop();
  }
}
