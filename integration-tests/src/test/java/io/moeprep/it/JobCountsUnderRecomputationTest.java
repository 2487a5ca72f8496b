package io.moeprep.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeprep.app.job.JobMain;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.spark.scheduler.AccumulableInfo;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The counts that users read in a permute's manifest (input rows, rows out, kept and dropped slots,
 * tokens per expert, bad rows) are exact when Spark recomputes a stage: on a standalone cluster, an
 * executor JVM killed in the middle of {@code moeprep permute --bad-rows skip} makes Spark run the
 * dispatch again for the partitions it held (the {@code moeprep.badRows} accumulator, which counts
 * per evaluation, counts their bad rows again), and the manifest still equals an undisturbed run's.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class JobCountsUnderRecomputationTest {
  @TempDir static Path dir;

  private static final long N = 40_000;
  private static final int PARTS = 8;

  /** Tokens whose id is 5 modulo 997 route to expert 99 of 8: bad rows. */
  private static long badRows() {
    long n = 0;
    for (long id = 0; id < N; id++) {
      n += id % 997 == 5 ? 1 : 0;
    }
    return n;
  }

  private static String[] permute(Path in, Path out) {
    return permute(in, out, 2);
  }

  private static String[] permute(Path in, Path out, int ranks, String... more) {
    String[] args = {
      "permute",
      "--input",
      in.toString(),
      "--out",
      out.toString(),
      "--ep-size",
      Integer.toString(ranks),
      "--experts",
      "8",
      "--hidden",
      "2",
      "--dtype",
      "f32",
      "--top-k",
      "2",
      "--tokens-per-batch",
      "4096",
      "--bad-rows",
      "skip",
      "--backend",
      "cpu"
    };
    String[] all = java.util.Arrays.copyOf(args, args.length + more.length);
    System.arraycopy(more, 0, all, args.length, more.length);
    return all;
  }

  private static int run(SparkSession s, String[] args, StringBuilder log) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code =
        JobMain.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8),
            () -> s);
    log.append(out.toString(StandardCharsets.UTF_8)).append(err.toString(StandardCharsets.UTF_8));
    return code;
  }

  /** The manifest's counts, without what differs from run to run. */
  private static JsonNode counts(Path out) throws Exception {
    JsonNode m = new ObjectMapper().readTree(out.resolve("manifest.json").toFile());
    var c = new ObjectMapper().createObjectNode();
    for (String k :
        List.of(
            "batches",
            "rows_out",
            "kept_slots",
            "dropped_slots",
            "bad_rows",
            "tokens_per_expert",
            "dropped_per_expert")) {
      c.set(k, m.get(k));
    }
    c.set("input_rows", m.get("input").get("rows"));
    var ranks = c.putArray("ranks");
    for (JsonNode r : m.get("ranks")) {
      ranks
          .addObject()
          .put("rows", r.get("rows").asLong())
          .put("kept", r.get("kept_slots").asLong());
    }
    return c;
  }

  private static StandaloneCluster c;
  private static SparkSession cs;
  private static Path in;

  /** A standalone cluster of two one-core executors, and the token table. */
  @BeforeAll
  static void startCluster() throws Exception {
    c = new StandaloneCluster(2, 1, "1536m");
    cs = c.clusterSession().appName("moeprep-it-counts").getOrCreate();
    c.awaitExecutors(cs, 2);
    in = dir.resolve("tokens");
    cs.range(0, N, 1, PARTS)
        .selectExpr(
            "id AS token_id",
            "array(CAST(id % 101 AS FLOAT), CAST(id % 7 AS FLOAT)) AS hidden",
            "array(CAST(id % 8 AS INT), CASE WHEN id % 997 = 5 THEN 99"
                + " ELSE CAST((3 * id + 1) % 8 AS INT) END) AS expert_ids",
            "array(0.25f, 0.75f) AS probs")
        .write()
        .parquet(in.toString());
  }

  @AfterAll
  static void stopCluster() throws Exception {
    try {
      if (cs != null) {
        cs.stop();
      }
    } finally {
      if (c != null) {
        c.close();
      }
    }
  }

  /**
   * Two {@code permute --force} runs on one {@code --out} at once, as two jobs of one application
   * on the cluster: one wins whole (its manifest, its ranks only, one generation), the other fails
   * with one line and exit 2.
   */
  @Test
  @Order(2)
  void twoRunsOnOneDirectoryOnTheClusterOneWinsWhole() throws Exception {
    Path out = dir.resolve("contended");
    StringBuilder first = new StringBuilder();
    assertEquals(0, run(cs, permute(in, out, 2), first), first.toString());
    java.util.concurrent.ExecutorService pool =
        java.util.concurrent.Executors.newFixedThreadPool(2);
    java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
    try {
      List<java.util.concurrent.Future<String[]>> runs = new java.util.ArrayList<>();
      for (int ranks : new int[] {4, 8}) {
        runs.add(
            pool.submit(
                () -> {
                  go.await();
                  StringBuilder log = new StringBuilder();
                  int code = run(cs, permute(in, out, ranks, "--force"), log);
                  return new String[] {
                    Integer.toString(code), Integer.toString(ranks), log.toString()
                  };
                }));
      }
      go.countDown();
      List<String[]> won = new java.util.ArrayList<>();
      List<String[]> lost = new java.util.ArrayList<>();
      for (var f : runs) {
        String[] r = f.get();
        (r[0].equals("0") ? won : lost).add(r);
      }
      assertEquals(1, won.size(), "exactly one run wins");
      assertEquals("2", lost.get(0)[0], lost.get(0)[2]);
      List<String> lines = lost.get(0)[2].lines().filter(l -> l.startsWith("moeprep")).toList();
      assertEquals(1, lines.size(), lost.get(0)[2]);
      assertTrue(lines.get(0).contains("is being written by another moeprep run"), lines.get(0));
      JsonNode m = new ObjectMapper().readTree(out.resolve("manifest.json").toFile());
      int ranks = Integer.parseInt(won.get(0)[1]);
      assertEquals(ranks, m.get("options").get("epSize").asInt(), "the winner's manifest");
      Path data = out.resolve(m.get("generation").asText()).resolve("data");
      List<Integer> got =
          cs
              .read()
              .parquet(data.toString())
              .select("ep_rank")
              .distinct()
              .orderBy("ep_rank")
              .collectAsList()
              .stream()
              .map(r -> r.getInt(0))
              .toList();
      assertEquals(
          java.util.stream.IntStream.range(0, ranks).boxed().toList(), got, "its ranks only");
      try (var listing = Files.list(out)) {
        assertEquals(
            List.of(m.get("generation").asText(), "manifest.json"),
            listing
                .map(p -> p.getFileName().toString())
                .filter(n -> !n.startsWith("."))
                .sorted()
                .toList(),
            "one generation: nothing of the loser's or of the first run");
      }
    } finally {
      pool.shutdownNow();
    }
  }

  /**
   * Runs first, on the cluster's first jobs: a killed executor loses the dispatch output the next
   * stage has yet to read (later, the cluster's executors may hold cached or fetched blocks).
   */
  @Test
  @Order(1)
  void manifestCountsAreExactWhenAnExecutorIsKilledMidPermute() throws Exception {
    cs.sparkContext().listenerBus().waitUntilEmpty(); // no task end of an earlier test comes late
    // the bad-rows accumulator's updates from successful tasks
    AtomicLong accumulated = new AtomicLong();
    AtomicReference<ProcessHandle> killed = new AtomicReference<>();
    long[] armedAt = {Long.MAX_VALUE};
    cs.sparkContext()
        .addSparkListener(
            new SparkListener() {
              @Override
              public void onTaskEnd(SparkListenerTaskEnd e) {
                if (!e.taskInfo().successful()) {
                  return;
                }
                long update = 0;
                for (AccumulableInfo a : CollectionConverters.asJava(e.taskInfo().accumulables())) {
                  if (a.name().isDefined()
                      && a.name().get().equals("moeprep.badRows")
                      && a.update().isDefined()) {
                    update += ((Number) a.update().get()).longValue();
                  }
                }
                accumulated.addAndGet(update);
                // the executor of the first dispatch task that counted bad rows after arming:
                // its map output is lost with it, and Spark runs that dispatch task again
                if (update > 0 && killed.get() == null && e.taskInfo().launchTime() >= armedAt[0]) {
                  String id = "--executor-id " + e.taskInfo().executorId() + " ";
                  for (ProcessHandle h : c.executors()) {
                    if (StandaloneCluster.commandLine(h).contains(id)
                        && killed.compareAndSet(null, h)) {
                      h.destroyForcibly();
                    }
                  }
                }
              }
            });

    StringBuilder log = new StringBuilder();
    Path calm = dir.resolve("calm");
    assertEquals(0, run(cs, permute(in, calm), log), log.toString());
    Thread.sleep(2000); // the listener bus delivers the last task ends after the job
    long calmAccumulated = accumulated.getAndSet(0);

    armedAt[0] = System.currentTimeMillis();
    Path hit = dir.resolve("killed");
    assertEquals(0, run(cs, permute(in, hit), log), log.toString());
    assertTrue(killed.get() != null, "an executor was killed");
    assertTrue(!killed.get().isAlive(), "the executor JVM is dead");
    Thread.sleep(2000);

    long exact = badRows();
    assertEquals(exact, calmAccumulated, "undisturbed, the dispatch ran once");
    assertTrue(
        accumulated.get() > exact,
        "the kill made Spark run the dispatch again (the accumulator counted "
            + accumulated.get()
            + " bad rows, "
            + exact
            + " exist)");
    JsonNode want = counts(calm);
    assertEquals(exact, want.get("bad_rows").asLong());
    assertEquals(N, want.get("input_rows").asLong());
    assertEquals(want.toPrettyString(), counts(hit).toPrettyString(), "manifest after the kill");
    assertTrue(Files.exists(hit.resolve("manifest.json")));
  }
}
