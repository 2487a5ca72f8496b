package io.moeprep.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.app.bench.TokenData;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The same job on a real standalone cluster (a Master and two Workers on 127.0.0.1, started from
 * the Maven classpath) and in local mode gives identical outputs: permuted rows and blocks written
 * to Parquet through Spark's committer, row maps, tokens per expert, and the combine. An executor
 * JVM killed in the middle of a permute job loses nothing (the output equals an undisturbed run's),
 * and no partial output is ever visible at the output path, also when a job fails.
 */
class StandaloneClusterTest {
  @TempDir Path dir;

  private static final int N = 3000;
  private static final int H = 24;
  private static final int K = 4;
  private static final int E = 16;
  private static final int R = 4;

  /** Every output of the job, sorted, as comparable strings (binary as hex). */
  private Map<String, List<String>> runJob(SparkSession spark, long seed, String tag) {
    Dataset<Row> tokens = TokenData.generate(spark, seed, N, 5, H, DType.BF16, K, E, 0.2);
    Path in = dir.resolve(tag + "-tokens");
    tokens.write().parquet(in.toString());
    Dataset<Row> input = spark.read().parquet(in.toString());
    Map<String, List<String>> out = new LinkedHashMap<>();
    for (Layout layout : Layout.values()) {
      PermuteSpec spec =
          PermuteSpec.builder(E, R)
              .hidden(H, DType.BF16)
              .topK(K)
              .tokensPerBatch(700)
              .perExpertCapacity(150, false)
              .layout(layout)
              .maxBlockBytes(40L * H * 2)
              .backend(BackendChoice.CPU)
              .build();
      PermuteOutput p = MoePrep.permute(input, spec);
      Path data = dir.resolve(tag + "-" + layout);
      p.data().write().parquet(data.toString());
      Dataset<Row> written = spark.read().parquet(data.toString());
      out.put(layout + " data", sorted(written));
      out.put(layout + " rowMap", sorted(p.rowMap()));
      out.put(layout + " tokensPerExpert", sorted(p.tokensPerExpert()));
      out.put(layout + " combined", sorted(MoePrep.unpermute(written, p.rowMap(), spec)));
    }
    return out;
  }

  private static List<String> sorted(Dataset<Row> d) {
    List<String> rows = new ArrayList<>();
    for (Row r : d.collectAsList()) {
      StringBuilder b = new StringBuilder();
      for (int i = 0; i < r.length(); i++) {
        Object v = r.get(i);
        if (v instanceof byte[] bytes) {
          b.append(java.util.HexFormat.of().formatHex(bytes));
        } else {
          b.append(v);
        }
        b.append('|');
      }
      rows.add(b.toString());
    }
    rows.sort(null);
    return rows;
  }

  @Test
  void clusterOutputEqualsLocalMode() throws Exception {
    long seed = Seeds.fresh("clusterOutputEqualsLocalMode").nextLong();
    Map<String, List<String>> local;
    SparkSession spark = StandaloneCluster.session("local[2]").getOrCreate();
    try {
      local = runJob(spark, seed, "local");
    } finally {
      spark.stop();
    }
    Map<String, List<String>> cluster;
    try (StandaloneCluster c = new StandaloneCluster(2, 1, "1536m")) {
      SparkSession cs = c.clusterSession().getOrCreate();
      try {
        c.awaitExecutors(cs, 2);
        cluster = runJob(cs, seed, "cluster");
        assertEquals(
            2,
            cs.sparkContext().statusTracker().getExecutorInfos().length - 1,
            "ran on two executors");
      } finally {
        cs.stop();
      }
    }
    assertEquals(local.keySet(), cluster.keySet());
    for (String k : local.keySet()) {
      assertTrue(local.get(k).size() > 0, k + " is not empty");
      assertEquals(local.get(k).size(), cluster.get(k).size(), k + " rows");
      assertArrayEquals(local.get(k).toArray(), cluster.get(k).toArray(), k);
    }
  }

  /** Input partitions of the executor-kill job: each sleeps once, so the map stage is slow. */
  private static final int KILL_PARTS = 8;

  private static final long KILL_TOKENS = 40_000;

  /** Deterministic tokens from spark.range; {@code slow(id)} sleeps at each partition's start. */
  private static Dataset<Row> killJobTokens(SparkSession spark, long badToken) {
    long perPart = KILL_TOKENS / KILL_PARTS;
    spark
        .udf()
        .register(
            "slow",
            (UDF1<Long, Long>)
                id -> {
                  if (id % perPart == 0) {
                    Thread.sleep(1500);
                  }
                  return id;
                },
            DataTypes.LongType);
    return spark
        .range(0, KILL_TOKENS, 1, KILL_PARTS)
        .selectExpr(
            "slow(id) AS token_id",
            "array(CAST(id % 101 AS FLOAT), CAST(id % 7 AS FLOAT)) AS hidden",
            "array(CAST(id % 8 AS INT), CASE WHEN id = "
                + badToken
                + " THEN 99 ELSE CAST((3 * id + 1) % 8 AS INT) END) AS expert_ids",
            "array(0.25f, 0.75f) AS probs");
  }

  private static PermuteSpec killJobSpec() {
    return PermuteSpec.builder(8, 2)
        .hidden(2, DType.F32)
        .topK(2)
        .tokensPerBatch(4096)
        .backend(BackendChoice.CPU)
        .build();
  }

  /** Files named part-* or _SUCCESS under {@code p}, outside the committer's _temporary. */
  private static List<String> visibleOutput(Path p) throws java.io.IOException {
    if (!Files.exists(p)) {
      return List.of();
    }
    try (java.util.stream.Stream<Path> s = Files.walk(p)) {
      return s.filter(f -> !p.relativize(f).toString().startsWith("_temporary"))
          .map(f -> f.getFileName().toString())
          .filter(n -> n.startsWith("part-") || n.equals("_SUCCESS"))
          .toList();
    }
  }

  /**
   * Writes {@code data} to {@code out} while a thread watches {@code out}: any part file seen there
   * before the job commit started is partial output, added to {@code partial}.
   */
  private static void writeWatched(Dataset<Row> data, Path out, List<String> partial)
      throws Exception {
    int commits = WatchedCommitProtocol.COMMITS_STARTED.get();
    java.util.concurrent.atomic.AtomicBoolean running =
        new java.util.concurrent.atomic.AtomicBoolean(true);
    Thread watcher =
        new Thread(
            () -> {
              while (running.get()) {
                boolean committing = WatchedCommitProtocol.COMMITS_STARTED.get() != commits;
                if (committing) {
                  return;
                }
                try {
                  List<String> seen = visibleOutput(out);
                  if (!seen.isEmpty() && WatchedCommitProtocol.COMMITS_STARTED.get() == commits) {
                    partial.addAll(seen);
                  }
                  Thread.sleep(20);
                } catch (java.io.IOException | java.io.UncheckedIOException e) {
                  // a directory moved while walking it: look again
                } catch (InterruptedException e) {
                  return;
                }
              }
            },
            "output-watcher");
    watcher.start();
    try {
      data.write().parquet(out.toString());
    } finally {
      running.set(false);
      watcher.join();
    }
  }

  @Test
  void executorKilledMidJobLosesNothingAndShowsNoPartialOutput() throws Exception {
    try (StandaloneCluster c = new StandaloneCluster(2, 1, "1536m")) {
      SparkSession cs =
          c.clusterSession()
              .config(
                  "spark.sql.sources.commitProtocolClass", WatchedCommitProtocol.class.getName())
              .getOrCreate();
      try {
        c.awaitExecutors(cs, 2);
        assertEquals(2, c.executors().size(), "two executor JVMs: " + c.describe());
        Dataset<Row> data = MoePrep.permute(killJobTokens(cs, -1), killJobSpec()).data();

        // undisturbed
        Path calm = dir.resolve("calm");
        List<String> calmPartial = new java.util.concurrent.CopyOnWriteArrayList<>();
        writeWatched(data, calm, calmPartial);
        assertEquals(List.of(), calmPartial, "partial output during the calm run");

        // an executor JVM is killed once the first task of the job has finished
        java.util.concurrent.atomic.AtomicReference<ProcessHandle> killed =
            new java.util.concurrent.atomic.AtomicReference<>();
        long armedAt = System.currentTimeMillis();
        cs.sparkContext()
            .addSparkListener(
                new SparkListener() {
                  @Override
                  public void onTaskEnd(SparkListenerTaskEnd e) {
                    if (killed.get() == null && e.taskInfo().launchTime() >= armedAt) {
                      List<ProcessHandle> ex = c.executors();
                      if (!ex.isEmpty() && killed.compareAndSet(null, ex.get(0))) {
                        ex.get(0).destroyForcibly();
                      }
                    }
                  }
                });
        Path hit = dir.resolve("killed");
        List<String> partial = new java.util.concurrent.CopyOnWriteArrayList<>();
        writeWatched(data, hit, partial);
        assertTrue(killed.get() != null, "an executor was killed");
        assertTrue(!killed.get().isAlive(), "the executor JVM is dead");
        assertEquals(List.of(), partial, "partial output while the disturbed job ran");
        assertTrue(Files.exists(hit.resolve("_SUCCESS")), "the disturbed job committed");
        List<String> want = sorted(cs.read().parquet(calm.toString()));
        List<String> got = sorted(cs.read().parquet(hit.toString()));
        assertTrue(want.size() > 0, "output is not empty");
        assertEquals(want.size(), got.size(), "rows after the kill");
        assertArrayEquals(want.toArray(), got.toArray(), "output after the kill");

        // a failing job (a bad row) leaves nothing at its output path
        Dataset<Row> bad = MoePrep.permute(killJobTokens(cs, 23_456), killJobSpec()).data();
        Path failed = dir.resolve("failed");
        List<String> seen = new java.util.concurrent.CopyOnWriteArrayList<>();
        Exception e =
            org.junit.jupiter.api.Assertions.assertThrows(
                Exception.class, () -> writeWatched(bad, failed, seen));
        assertEquals(List.of(), seen, "partial output while the failing job ran");
        StringBuilder causes = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
          causes.append(t.getMessage()).append(" | ");
        }
        assertTrue(
            causes.toString().contains("token_id=23456: expert_ids[1] = 99 is out of range"),
            causes.toString());
        assertEquals(List.of(), visibleOutput(failed), "no part files or _SUCCESS after failing");
      } finally {
        cs.stop();
      }
    }
  }
}
