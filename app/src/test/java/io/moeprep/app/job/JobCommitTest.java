package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.moeprep.spark.SparkSessions;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * How the job commits its outputs: each dataset in place through Spark's commit protocol, under a
 * generation directory, and the manifest last as the commit point, with a lock against a second
 * writer; on a file system whose rename is a copy (as on object stores), a failed {@code --force}
 * run keeps the old output, and readers refuse a directory without a manifest.
 */
class JobCommitTest {
  @TempDir static Path tmp;
  static Path tokens;
  private static final String FS_KEY = "fs." + NonAtomicRenameFileSystem.SCHEME + ".impl";

  @BeforeAll
  static void setUp() {
    System.setProperty("spark.hadoop." + FS_KEY, NonAtomicRenameFileSystem.class.getName());
    SparkSessions.local()
        .sparkContext()
        .hadoopConfiguration()
        .set(FS_KEY, NonAtomicRenameFileSystem.class.getName());
    tokens = tmp.resolve("tokens");
    ok(
        "generate",
        "--out",
        tokens.toString(),
        "--tokens",
        "1200",
        "--hidden",
        "16",
        "--dtype",
        "bf16",
        "--top-k",
        "2",
        "--experts",
        "8",
        "--tokens-per-batch",
        "400",
        "--seed",
        "7");
  }

  @AfterAll
  static void tearDown() {
    System.clearProperty("spark.hadoop." + FS_KEY);
  }

  static JobCliTest.Result job(String... args) {
    return JobCliTest.run(SparkSessions::local, args);
  }

  static JobCliTest.Result ok(String... args) {
    JobCliTest.Result r = job(args);
    assertEquals(0, r.code(), "exit code of " + String.join(" ", args) + ": " + r.err());
    return r;
  }

  private static String[] permute(String out, int ranks, String... more) {
    List<String> a = new ArrayList<>(List.of("permute", "--input", tokens.toString()));
    a.addAll(List.of("--out", out, "--ep-size", "" + ranks, "--backend", "cpu"));
    a.addAll(List.of(more));
    return a.toArray(String[]::new);
  }

  private static List<String> children(Path dir) throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      return s.map(p -> p.getFileName().toString()).sorted().toList();
    }
  }

  private static List<String> names(String... names) {
    return java.util.Arrays.stream(names).sorted().toList();
  }

  private static List<String> generations(Path dir) throws IOException {
    return children(dir).stream().filter(n -> n.startsWith(OutputDir.GENERATION_PREFIX)).toList();
  }

  /** The ranks present in the written data, from the manifest's generation. */
  private static TreeSet<Integer> ranksOf(Path dir) throws IOException {
    TreeSet<Integer> r = new TreeSet<>();
    SparkSession spark = SparkSessions.local();
    for (Row row :
        spark
            .read()
            .parquet(JobEndToEndTest.dataset(dir, "data").toString())
            .select("ep_rank")
            .distinct()
            .collectAsList()) {
      r.add(row.getInt(0));
    }
    return r;
  }

  @Test
  void theDatasetsAreCommittedInPlaceAndTheManifestLastOnAFileSystemWithoutAtomicRename()
      throws Exception {
    Path local = tmp.resolve("perm-nonatomic");
    String out = NonAtomicRenameFileSystem.SCHEME + ":" + local;
    NonAtomicRenameFileSystem.RENAMES.clear();
    ok(permute(out, 4));
    JsonNode first = JobEndToEndTest.manifest(local.resolve("manifest.json"));
    String gen = first.get(OutputDir.GENERATION).asText();
    assertEquals(List.of(gen), generations(local));
    assertEquals(names("manifest.json", gen), children(local), "no lock, nothing else left");
    ok("verify", "--permuted", out);

    // a --force run that fails in its tasks (hidden rows are 32 bytes, not 64) keeps the old
    // output whole, and a reader that starts from the manifest sees only complete output meanwhile
    List<String> seen = new CopyOnWriteArrayList<>();
    AtomicBoolean running = new AtomicBoolean(true);
    Thread reader =
        new Thread(
            () -> {
              while (running.get()) {
                try {
                  JsonNode m = JobEndToEndTest.manifest(local.resolve("manifest.json"));
                  for (String d : List.of("data", "row_map", "tokens_per_expert")) {
                    Path p = local.resolve(m.get(OutputDir.GENERATION).asText()).resolve(d);
                    if (!Files.exists(p.resolve("_SUCCESS"))) {
                      seen.add("incomplete " + p);
                    }
                  }
                } catch (IOException | RuntimeException e) {
                  seen.add("no readable manifest: " + e);
                }
              }
            });
    reader.start();
    JobCliTest.Result bad;
    try {
      bad = job(permute(out, 2, "--hidden", "8", "--force"));
    } finally {
      running.set(false);
      reader.join();
    }
    assertEquals(2, bad.code(), bad.err());
    assertEquals(List.of(), seen, "what a reader saw while the failing --force run ran");
    assertEquals(
        first.toString(),
        JobEndToEndTest.manifest(local.resolve("manifest.json")).toString(),
        "the old manifest is kept");
    assertEquals(names("manifest.json", gen), children(local), "the failed run left nothing");
    ok("verify", "--permuted", out);

    // a --force run that succeeds replaces it whole
    ok(permute(out, 2, "--force"));
    JsonNode second = JobEndToEndTest.manifest(local.resolve("manifest.json"));
    String gen2 = second.get(OutputDir.GENERATION).asText();
    assertFalse(gen.equals(gen2));
    assertEquals(names("manifest.json", gen2), children(local), "the old generation is gone");
    assertEquals(new TreeSet<>(List.of(0, 1)), ranksOf(local));
    ok("verify", "--permuted", out);
    ok("unpermute", "--permuted", out, "--out", out + "-combined");
    ok("verify", "--permuted", out, "--combined", out + "-combined");

    // no directory was renamed but Spark's own task and job commits under _temporary
    for (NonAtomicRenameFileSystem.Rename r : NonAtomicRenameFileSystem.RENAMES) {
      assertTrue(
          r.from().contains("/_temporary/") || !r.directory(),
          "a directory was renamed outside Spark's commit: " + r);
      assertTrue(
          r.from().contains("/_temporary/") || r.from().contains(".tmp-"),
          "an output file was renamed outside Spark's commit: " + r);
    }
  }

  @Test
  void readersRefuseADirectoryWithoutAManifest() throws Exception {
    Path dir = tmp.resolve("perm-no-manifest");
    ok(permute(dir.toString(), 2));
    Files.delete(dir.resolve("manifest.json"));
    for (String[] args :
        new String[][] {
          {"verify", "--permuted", dir.toString()},
          {"stats", "--permuted", dir.toString(), "--out", tmp.resolve("s").toString()},
          {"unpermute", "--permuted", dir.toString(), "--out", tmp.resolve("c").toString()}
        }) {
      JobCliTest.Result r = job(args);
      assertEquals(2, r.code(), args[0] + ": " + r.err());
      List<String> lines = r.err().lines().filter(l -> l.startsWith("moeprep")).toList();
      assertEquals(1, lines.size(), r.err());
      assertTrue(lines.get(0).contains("has no manifest.json"), r.err());
    }
  }

  @Test
  void twoRunsOnOneDirectoryAtOnceOneWinsWholeTheOtherFailsWithOneLine() throws Exception {
    Path local = tmp.resolve("perm-contended");
    ok(permute(local.toString(), 4)); // an earlier output, replaced by the winner
    ExecutorService pool = Executors.newFixedThreadPool(2);
    CountDownLatch start = new CountDownLatch(1);
    try {
      List<Future<JobCliTest.Result>> runs = new ArrayList<>();
      for (int ranks : new int[] {2, 8}) {
        runs.add(
            pool.submit(
                () -> {
                  start.await();
                  return job(permute(local.toString(), ranks, "--force"));
                }));
      }
      start.countDown();
      List<JobCliTest.Result> results = new ArrayList<>();
      for (Future<JobCliTest.Result> f : runs) {
        results.add(f.get());
      }
      List<JobCliTest.Result> won = results.stream().filter(r -> r.code() == 0).toList();
      List<JobCliTest.Result> lost = results.stream().filter(r -> r.code() != 0).toList();
      assertEquals(1, won.size(), "exactly one run wins: " + results);
      assertEquals(2, lost.get(0).code(), lost.get(0).err());
      List<String> lines = lost.get(0).err().lines().filter(l -> l.startsWith("moeprep")).toList();
      assertEquals(1, lines.size(), lost.get(0).err());
      assertTrue(lines.get(0).contains("is being written by another moeprep run"), lines.get(0));
      // the winner's output, whole: its manifest, its ranks, nothing of the loser's or the earlier
      JsonNode m = JobEndToEndTest.manifest(local.resolve("manifest.json"));
      int ranks = m.get("options").get("epSize").asInt();
      assertTrue(won.get(0).out().contains("on " + ranks + " ranks"), won.get(0).out());
      TreeSet<Integer> want = new TreeSet<>();
      for (int r = 0; r < ranks; r++) {
        want.add(r);
      }
      assertEquals(want, ranksOf(local));
      assertEquals(names("manifest.json", m.get(OutputDir.GENERATION).asText()), children(local));
      ok("verify", "--permuted", local.toString());
    } finally {
      pool.shutdownNow();
    }
  }
}
