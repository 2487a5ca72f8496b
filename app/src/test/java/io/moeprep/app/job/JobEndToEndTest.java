package io.moeprep.app.job;

import static org.apache.spark.sql.functions.col;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.exec.BatchCounters;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every subcommand end to end in local mode, outputs checked against direct computations: the
 * generated table and its routing, permute's outputs and manifest, verify catching a corrupted
 * output, unpermute, stats' chart and numbers, atomic outputs, and the demo's time.
 */
class JobEndToEndTest {
  static final int N = 2000;
  static final int H = 48;
  static final int K = 4;
  static final int E = 16;
  static final int T = 500;
  static final int R = 4;

  @TempDir static Path tmp;
  static Path tokens;
  private final SparkSession spark = SparkSessions.local();

  static JobCliTest.Result job(String... args) {
    return JobCliTest.run(SparkSessions::local, args);
  }

  static JobCliTest.Result ok(String... args) {
    JobCliTest.Result r = job(args);
    assertEquals(0, r.code(), "exit code of " + String.join(" ", args) + ": " + r.err());
    return r;
  }

  @BeforeAll
  static void generate() {
    tokens = tmp.resolve("tokens");
    ok(generateArgs(tokens, 42, 3));
  }

  static String[] generateArgs(Path out, long seed, int partitions) {
    return new String[] {
      "generate",
      "--out",
      out.toString(),
      "--tokens",
      "" + N,
      "--hidden",
      "" + H,
      "--dtype",
      "bf16",
      "--top-k",
      "" + K,
      "--experts",
      "" + E,
      "--tokens-per-batch",
      "" + T,
      "--score",
      "sigmoid",
      "--groups",
      "4",
      "--topk-groups",
      "2",
      "--skew",
      "1.0",
      "--seed",
      "" + seed,
      "--partitions",
      "" + partitions
    };
  }

  /** The files of a generate output's table: the generation its manifest names. */
  static Path table(Path dir) throws IOException {
    return Path.of(
        GenerateCommand.tablePath(dir.toString(), manifest(dir.resolve(GenerateCommand.MANIFEST))));
  }

  private List<Row> sortedRows(Path dir) throws IOException {
    return spark.read().parquet(table(dir).toString()).orderBy("token_id").collectAsList();
  }

  /** Dataset {@code name} of a job's output {@code dir}: in the generation its manifest names. */
  static Path dataset(Path dir, String name) throws IOException {
    Path m = dir.resolve("manifest.json");
    String gen = manifest(m).path(OutputDir.GENERATION).asText("");
    return (gen.isEmpty() ? dir : dir.resolve(gen)).resolve(name);
  }

  static JsonNode manifest(Path file) throws IOException {
    return Json.MAPPER.readTree(file.toFile());
  }

  // ---------------------------------------------------------------- generate

  @Test
  void generateWritesTokensWithGroupLimitedTopK() throws IOException {
    List<Row> rows = sortedRows(tokens);
    assertEquals(N, rows.size());
    assertEquals(
        TokenGenerator.SCHEMA.simpleString(),
        spark.read().parquet(table(tokens).toString()).schema().simpleString());
    assertEquals(
        N,
        spark.read().parquet(tokens.toString()).count(),
        "a plain read of the directory finds the table");
    for (int i = 0; i < N; i++) {
      Row r = rows.get(i);
      assertEquals(i, r.getLong(0));
      assertEquals(i / T, r.getLong(1), "batch = token_id / T");
      assertEquals(H * 2, ((byte[]) r.get(2)).length);
      List<Integer> ids = r.getList(3);
      List<Float> probs = r.getList(4);
      assertEquals(K, ids.size());
      assertEquals(K, new HashSet<>(ids).size(), "distinct experts of token " + i);
      Set<Integer> groups = new HashSet<>();
      double sum = 0;
      for (int j = 0; j < K; j++) {
        assertTrue(ids.get(j) >= 0 && ids.get(j) < E);
        groups.add(ids.get(j) / (E / 4));
        sum += probs.get(j);
      }
      assertTrue(groups.size() <= 2, "token " + i + " uses groups " + groups);
      assertEquals(1.0, sum, 1e-5, "normalised probs of token " + i);
    }
    JsonNode m = manifest(tokens.resolve("_manifest.json"));
    assertEquals("generate", m.get("command").asText());
    assertEquals(N, m.get("tokens").asLong());
    assertEquals(4, m.get("batches").asInt());
    assertEquals("sigmoid", m.get("router").get("score").asText());
    assertEquals(2, m.get("router").get("topk_groups").asInt());
  }

  @Test
  void generateEndsWithASummaryOfTheFilesItWrote() throws IOException {
    Path out = tmp.resolve("gen-summary");
    JobCliTest.Result r = ok(generateArgs(out, 7, 3));
    List<String> lines = r.out().lines().toList();
    assertEquals(2, lines.size(), r.out());
    long[] written = visibleFilesAndBytes(table(out));
    assertEquals(3, written[0], "one file per partition");
    assertTrue(
        lines
            .get(1)
            .matches(
                Pattern.quote(
                        "generate: "
                            + N
                            + " tokens, "
                            + N / T
                            + " batches, 3 partitions, 3 files, "
                            + BatchCounters.bytes(written[1])
                            + " in ")
                    + "[0-9.]+ s"),
        lines.get(1));
  }

  /** The number and bytes of the files under {@code dir} that are not hidden (_x, .x). */
  static long[] visibleFilesAndBytes(Path dir) throws IOException {
    long[] n = new long[2];
    try (Stream<Path> files = Files.walk(dir)) {
      for (Path f : files.filter(Files::isRegularFile).toList()) {
        boolean hidden = false;
        for (Path part : dir.relativize(f)) {
          hidden |= part.toString().startsWith("_") || part.toString().startsWith(".");
        }
        if (!hidden) {
          n[0]++;
          n[1] += Files.size(f);
        }
      }
    }
    return n;
  }

  @Test
  void generateIsReproducible() throws IOException {
    Path again = tmp.resolve("tokens-again");
    ok(generateArgs(again, 42, 3));
    // same seed and partitions: the same bytes, file by file
    assertEquals(partFiles(tokens).size(), 3);
    List<Path> a = partFiles(tokens);
    List<Path> b = partFiles(again);
    for (int i = 0; i < a.size(); i++) {
      assertArrayEquals(Files.readAllBytes(a.get(i)), Files.readAllBytes(b.get(i)), "" + a.get(i));
    }
    // another partition count: the same rows
    Path other = tmp.resolve("tokens-5p");
    ok(generateArgs(other, 42, 5));
    assertRowsEqual(sortedRows(tokens), sortedRows(other));
    // another seed: other rows
    Path seed = tmp.resolve("tokens-seed");
    ok(generateArgs(seed, 43, 3));
    assertNotEquals(sortedRows(tokens).get(0).getList(3), sortedRows(seed).get(0).getList(3));
  }

  private static void assertRowsEqual(List<Row> a, List<Row> b) {
    assertEquals(a.size(), b.size());
    for (int i = 0; i < a.size(); i++) {
      assertEquals(a.get(i).getLong(0), b.get(i).getLong(0));
      assertArrayEquals((byte[]) a.get(i).get(2), (byte[]) b.get(i).get(2));
      assertEquals(a.get(i).getList(3), b.get(i).getList(3));
      assertEquals(a.get(i).getList(4), b.get(i).getList(4));
    }
  }

  private static List<Path> partFiles(Path dir) throws IOException {
    try (Stream<Path> s = Files.list(table(dir))) {
      return s.filter(p -> p.getFileName().toString().startsWith("part-"))
          .sorted(
              (x, y) ->
                  x.getFileName()
                      .toString()
                      .substring(0, 10)
                      .compareTo(y.getFileName().toString().substring(0, 10)))
          .toList();
    }
  }

  // ---------------------------------------------------------------- permute

  /** Per expert: kept and dropped slots under per-expert capacity {@code c}, counted directly. */
  private long[][] directTokensPerExpert(long c) throws IOException {
    Map<Long, long[]> perBatch = new HashMap<>();
    for (Row r : sortedRows(tokens)) {
      long[] counts = perBatch.computeIfAbsent(r.getLong(1), b -> new long[E]);
      for (Object id : r.getList(3)) {
        counts[(Integer) id]++;
      }
    }
    long[][] out = new long[2][E];
    for (long[] counts : perBatch.values()) {
      for (int e = 0; e < E; e++) {
        out[0][e] += Math.min(counts[e], c);
        out[1][e] += counts[e] - Math.min(counts[e], c);
      }
    }
    return out;
  }

  @Test
  void permuteWritesRanksAndAManifestEqualToADirectCount() throws IOException {
    Path out = tmp.resolve("perm-rows");
    JobCliTest.Result r =
        ok(
            "permute",
            "--input",
            tokens.toString(),
            "--out",
            out.toString(),
            "--ep-size",
            "" + R,
            "--capacity",
            "150",
            "--backend",
            "cpu");
    assertTrue(r.out().startsWith("permute: " + N + " tokens -> "), r.out());
    // the summary of the counters (the accumulators moeprep.permute.*): every (rank, batch) on the
    // CPU, asked for: no fallback
    JsonNode pm = manifest(out.resolve("manifest.json"));
    String summary = r.out().lines().toList().get(1);
    assertTrue(
        summary.matches(
            "permute: "
                + pm.get("rows_out").asLong()
                + " rows, [0-9.]+ [KM]iB, "
                + R
                + " ranks, "
                + R * (N / T)
                + " rank batches \\(gpu 0, cpu "
                + R * (N / T)
                + "\\), 0 fallbacks, 0 bad rows in [0-9.]+ s"),
        summary);
    assertFalse(pm.get("outputs").has("bad_rows"), "no bad_rows without --bad-rows skip");
    for (String part : List.of("data", "row_map", "tokens_per_expert")) {
      for (int rank = 0; rank < R; rank++) {
        assertTrue(Files.isDirectory(dataset(out, part).resolve("ep_rank=" + rank)), part + rank);
      }
    }
    JsonNode m = manifest(out.resolve("manifest.json"));
    long[][] direct = directTokensPerExpert(150);
    long[] kept = new long[E];
    long[] dropped = new long[E];
    for (int e = 0; e < E; e++) {
      kept[e] = m.get("tokens_per_expert").get(e).asLong();
      dropped[e] = m.get("dropped_per_expert").get(e).asLong();
    }
    assertArrayEquals(direct[0], kept, "tokens per expert");
    assertArrayEquals(direct[1], dropped, "dropped per expert");
    assertTrue(Arrays.stream(dropped).sum() > 0, "the capacity drops slots");
    assertEquals(Arrays.stream(dropped).sum(), m.get("dropped_slots").asLong());
    assertEquals(tokens.toString(), m.get("input").get("path").asText());
    assertEquals(N, m.get("input").get("rows").asLong());
    assertEquals("perExpert:150", m.get("options").get("capacity").asText());
    assertEquals("rows", m.get("options").get("layout").asText());
    assertEquals("all_to_all", m.get("options").get("dispatch").asText());
    assertEquals(4, m.get("batches").asInt());
    for (String t : List.of("data", "row_map", "tokens_per_expert", "manifest", "total")) {
      assertTrue(m.get("timings_s").get(t).asDouble() > 0, t);
    }
    long rows = spark.read().parquet(dataset(out, "data").toString()).count();
    assertEquals(Arrays.stream(kept).sum(), rows, "no padding: one row per kept slot");
    assertEquals(rows, m.get("rows_out").asLong());
    assertEquals(R, m.get("ranks").size());
    for (int rank = 0; rank < R; rank++) {
      JsonNode rn = m.get("ranks").get(rank);
      assertEquals("cpu", rn.get("backend").asText());
      assertEquals(
          spark
              .read()
              .parquet(dataset(out, "data").toString())
              .where(col("ep_rank").equalTo(rank))
              .count(),
          rn.get("rows").asLong());
    }
    assertNoTemporaryDirs(tmp);
    assertTrue(ok("verify", "--permuted", out.toString()).out().startsWith("verify: OK"));
  }

  @Test
  void permuteFailsOnABadRowOrSkipsItIntoBadRows() throws IOException {
    Path in = tmp.resolve("bad-tokens");
    spark
        .sql(
            "SELECT id AS token_id, array(CAST(id AS FLOAT)) AS hidden, array(CAST(id % 4 AS INT),"
                + " CASE WHEN id = 777 THEN 9 ELSE CAST((id + 1) % 4 AS INT) END) AS expert_ids,"
                + " array(0.5f, 0.5f) AS probs FROM range(0, 2000, 1, 2)")
        .write()
        .parquet(in.toString());
    List<String> common =
        List.of(
            "permute",
            "--input",
            in.toString(),
            "--experts",
            "4",
            "--ep-size",
            "2",
            "--hidden",
            "1",
            "--dtype",
            "f32",
            "--top-k",
            "2",
            "--tokens-per-batch",
            "500",
            "--backend",
            "cpu");
    Path failed = tmp.resolve("bad-fail");
    List<String> a = new ArrayList<>(common);
    a.addAll(List.of("--out", failed.toString()));
    JobCliTest.Result r = job(a.toArray(String[]::new));
    assertNotEquals(0, r.code(), r.out());
    assertTrue(r.err().contains("token_id=777: expert_ids[1] = 9 is out of range"), r.err());
    assertFalse(Files.exists(failed), "no output after the failure");

    Path skipped = tmp.resolve("bad-skip");
    List<String> b = new ArrayList<>(common);
    b.addAll(List.of("--out", skipped.toString(), "--bad-rows", "skip"));
    JobCliTest.Result s = ok(b.toArray(String[]::new));
    assertTrue(s.out().contains(", 1 bad rows skipped"), s.out());
    JsonNode m = manifest(skipped.resolve("manifest.json"));
    assertEquals(1, m.get("bad_rows").asLong());
    assertEquals("bad_rows", m.get("outputs").get("bad_rows").asText());
    assertTrue(s.out().lines().toList().get(1).contains(", 1 bad rows in "), s.out());
    assertEquals("skip", m.get("options").get("badRows").asText());
    List<Row> bad = spark.read().parquet(dataset(skipped, "bad_rows").toString()).collectAsList();
    assertEquals(1, bad.size(), bad.toString());
    assertEquals(777L, bad.get(0).getLong(0));
    assertEquals(1L, bad.get(0).getLong(1));
    assertEquals("expert_ids[1] = 9 is out of range [0, 4) or -1", bad.get(0).getString(2));
  }

  @Test
  void packedAllGatherWithAlignmentThenUnpermuteVerifiesByteForByte() throws IOException {
    Path out = tmp.resolve("perm-packed");
    ok(
        "permute",
        "--input",
        tokens.toString(),
        "--out",
        out.toString(),
        "--ep-size",
        "" + R,
        "--layout",
        "packed",
        "--dispatch",
        "all_gather",
        "--align",
        "8",
        "--capacity-factor",
        "1.0",
        "--max-block-bytes",
        "1024",
        "--backend",
        "cpu");
    JsonNode m = manifest(out.resolve("manifest.json"));
    assertEquals("perExpert:" + (T * K / E), m.get("options").get("capacity").asText());
    long rows =
        spark
            .read()
            .parquet(dataset(out, "data").toString())
            .agg(org.apache.spark.sql.functions.sum("rows"))
            .first()
            .getLong(0);
    assertEquals(rows, m.get("rows_out").asLong());
    assertEquals(0, rows % 8, "aligned segments");
    Path comb = tmp.resolve("comb-packed");
    JobCliTest.Result u =
        ok("unpermute", "--permuted", out.toString(), "--out", comb.toString(), "--backend", "cpu");
    assertTrue(u.out().startsWith("unpermute: " + N + " tokens combined"), u.out());
    assertTrue(
        u.out()
            .lines()
            .toList()
            .get(1)
            .matches(
                "unpermute: "
                    + N
                    + " tokens, [0-9.]+ [KM]iB, "
                    + N / T
                    + " batches \\(gpu 0, cpu "
                    + N / T
                    + "\\), 0 fallbacks in [0-9.]+ s"),
        u.out());
    assertEquals(N, spark.read().parquet(dataset(comb, "combined").toString()).count());
    // each rank gets back its contiguous quarter of every batch
    for (int rank = 0; rank < R; rank++) {
      Dataset<Row> mine =
          spark.read().parquet(dataset(comb, "combined").resolve("ep_rank=" + rank).toString());
      assertEquals(N / R, mine.count());
      Row range =
          mine.agg(
                  org.apache.spark.sql.functions.min(col("token_id").mod(T)),
                  org.apache.spark.sql.functions.max(col("token_id").mod(T)))
              .first();
      assertEquals(rank * T / R, range.getLong(0));
      assertEquals((rank + 1) * T / R - 1, range.getLong(1));
    }
    JsonNode um = manifest(comb.resolve("manifest.json"));
    assertTrue(um.get("input").get("identity_experts").asBoolean());
    assertEquals(N, um.get("combined_tokens").asLong());
    JobCliTest.Result v =
        ok("verify", "--permuted", out.toString(), "--combined", comb.toString(), "--batches", "0");
    assertTrue(v.out().contains("4 of 4 batches"), v.out());
    assertTrue(v.out().contains(N + " combined tokens"), v.out());
    // every rank batch, every output row and its hidden bytes (H bf16 elements), every token
    long rowsOut = manifest(out.resolve("manifest.json")).get("rows_out").asLong();
    String summary = v.out().lines().toList().get(1);
    assertTrue(
        summary.matches(
            Pattern.quote(
                    "verify: "
                        + R * (N / T)
                        + " rank batches, "
                        + rowsOut
                        + " rows, "
                        + BatchCounters.bytes(rowsOut * H * 2)
                        + " of hidden rows, "
                        + N
                        + " combined tokens compared in ")
                + "[0-9.]+ s"),
        summary);
  }

  /**
   * {@code --format safetensors}: one file per (rank, batch) under DIR/data, the manifest's rows
   * equal to the all-to-all Parquet run's, {@code verify} passing on the files and naming a flipped
   * byte, and {@code unpermute} refusing them as expert outputs before Spark starts.
   */
  @Test
  void permuteToSafetensorsVerifiesByteForByte() throws IOException {
    Path st = tmp.resolve("perm-safetensors");
    ok(
        "permute",
        "--input",
        tokens.toString(),
        "--out",
        st.toString(),
        "--ep-size",
        "" + R,
        "--capacity",
        "60",
        "--pad-to-capacity",
        "--format",
        "safetensors",
        "--max-block-bytes",
        "4096",
        "--backend",
        "cpu");
    Path pq = tmp.resolve("perm-parquet-by-rank");
    ok(
        "permute",
        "--input",
        tokens.toString(),
        "--out",
        pq.toString(),
        "--ep-size",
        "" + R,
        "--capacity",
        "60",
        "--pad-to-capacity",
        "--partitioning",
        "rank",
        "--backend",
        "cpu");
    JsonNode m = manifest(st.resolve("manifest.json"));
    JsonNode mp = manifest(pq.resolve("manifest.json"));
    assertEquals("safetensors", m.get("outputs").get("format").asText());
    assertTrue(m.get("fallback_reasons").isArray(), "reasons said once, not per rank");
    m.get("ranks").forEach(rank -> assertFalse(rank.has("fallback_reason"), rank.toString()));
    assertEquals("batch", m.get("options").get("partitioning").asText());
    assertEquals("rank", mp.get("options").get("partitioning").asText());
    assertEquals(mp.get("rows_out").asLong(), m.get("rows_out").asLong());
    assertEquals(1L * R * (N / T) * (E / R) * 60, m.get("rows_out").asLong(), "padded segments");
    for (int r = 0; r < R; r++) {
      assertEquals(
          mp.get("ranks").get(r).get("rows").asLong(), m.get("ranks").get(r).get("rows").asLong());
      for (int b = 0; b < N / T; b++) {
        assertTrue(
            Files.isRegularFile(
                dataset(st, "data").resolve("rank=" + r + "/batch=" + b + ".safetensors")),
            "rank " + r + " batch " + b);
      }
    }
    JobCliTest.Result v = ok("verify", "--permuted", st.toString(), "--batches", "0");
    assertTrue(v.out().contains("4 of 4 batches"), v.out());

    Path bad = tmp.resolve("perm-safetensors-corrupt");
    copyTree(st, bad);
    Path file = dataset(bad, "data").resolve("rank=1/batch=2.safetensors");
    byte[] f = Files.readAllBytes(file);
    long headerLength =
        java.nio.ByteBuffer.wrap(f, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
    f[(int) (8 + headerLength + 2L * H * 3 + 5)] ^= 0x10; // row 3, byte 5 of permuted
    Files.write(file, f);
    Files.deleteIfExists(dataset(bad, "data").resolve("rank=1/.batch=2.safetensors.crc"));
    JobCliTest.Result r = job("verify", "--permuted", bad.toString(), "--batches", "0");
    assertEquals(1, r.code(), r.out() + r.err());
    assertTrue(r.out().contains("MISMATCH: rank 1, batch 2, row 3"), r.out());
    assertTrue(r.out().contains("hidden byte 5"), r.out());

    JobCliTest.Result u =
        job("unpermute", "--permuted", st.toString(), "--out", tmp.resolve("u-st").toString());
    assertEquals(2, u.code(), u.out() + u.err());
    assertTrue(u.err().contains("give --expert-out"), u.err());
  }

  @Test
  void verifyReportsTheFirstDifference() throws IOException {
    Path good = tmp.resolve("perm-to-corrupt");
    ok(
        "permute",
        "--input",
        tokens.toString(),
        "--out",
        good.toString(),
        "--ep-size",
        "" + R,
        "--backend",
        "cpu");
    Path bad = tmp.resolve("perm-corrupt");
    Files.createDirectories(bad);
    Files.copy(good.resolve("manifest.json"), bad.resolve("manifest.json"));
    copyTree(dataset(good, "row_map"), dataset(bad, "row_map"));
    copyTree(dataset(good, "tokens_per_expert"), dataset(bad, "tokens_per_expert"));
    Dataset<Row> data = spark.read().parquet(dataset(good, "data").toString());
    int hiddenAt = data.schema().fieldIndex("hidden");
    int rowAt = data.schema().fieldIndex("row");
    int rankAt = data.schema().fieldIndex("ep_rank");
    int batchAt = data.schema().fieldIndex("batch");
    data.map(
            (MapFunction<Row, Row>)
                row -> {
                  if (row.getInt(rankAt) != 1
                      || row.getLong(batchAt) != 2
                      || row.getInt(rowAt) != 3) {
                    return row;
                  }
                  Object[] v = new Object[row.size()];
                  for (int i = 0; i < v.length; i++) {
                    v[i] = row.get(i);
                  }
                  byte[] h = ((byte[]) v[hiddenAt]).clone();
                  h[5] ^= 0x10;
                  v[hiddenAt] = h;
                  return RowFactory.create(v);
                },
            Encoders.row(data.schema()))
        .write()
        .partitionBy("ep_rank")
        .parquet(dataset(bad, "data").toString());
    JobCliTest.Result r = job("verify", "--permuted", bad.toString(), "--batches", "0");
    assertEquals(1, r.code(), r.out() + r.err());
    assertTrue(r.out().contains("MISMATCH: rank 1, batch 2, row 3"), r.out());
    assertTrue(r.out().contains("hidden byte 5"), r.out());
    assertTrue(r.err().contains("moeprep verify: failed"), r.err());
    // a sample without batch 2 does not see it; the full check does
    assertEquals(0, ok("verify", "--permuted", good.toString(), "--batches", "2").code());
  }

  private static void copyTree(Path from, Path to) throws IOException {
    try (Stream<Path> s = Files.walk(from)) {
      for (Path p : s.toList()) {
        Path q = to.resolve(from.relativize(p).toString());
        if (Files.isDirectory(p)) {
          Files.createDirectories(q);
        } else {
          Files.copy(p, q);
        }
      }
    }
  }

  private static void assertNoTemporaryDirs(Path dir) throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      List<String> hidden =
          s.map(p -> p.getFileName().toString()).filter(n -> n.contains(".tmp-")).toList();
      assertEquals(List.of(), hidden, "temporary directories left behind");
    }
  }

  @Test
  void outputsAppearOnlyWhenComplete() throws IOException {
    Path out = tmp.resolve("perm-atomic");
    Files.createDirectories(out);
    Files.writeString(out.resolve("keep.txt"), "mine");
    JobCliTest.Result exists =
        job("permute", "--input", tokens.toString(), "--out", out.toString(), "--ep-size", "4");
    assertEquals(2, exists.code());
    assertTrue(exists.err().contains("exists: choose another --out or add --force"), exists.err());
    assertEquals("mine", Files.readString(out.resolve("keep.txt")));
    // a failure inside the Spark tasks (hidden rows are 96 bytes, not 64): no output at all
    Path failed = tmp.resolve("perm-failed");
    JobCliTest.Result bad =
        job(
            "permute",
            "--input",
            tokens.toString(),
            "--out",
            failed.toString(),
            "--ep-size",
            "4",
            "--hidden",
            "32");
    assertEquals(2, bad.code(), bad.err());
    assertEquals(1, bad.err().lines().filter(l -> l.startsWith("moeprep")).count(), bad.err());
    assertTrue(bad.err().contains("hidden"), bad.err());
    assertFalse(Files.exists(failed));
    assertNoTemporaryDirs(tmp);
    // a missing input names the option
    JobCliTest.Result missing =
        job(
            "permute",
            "--input",
            tmp.resolve("nope").toString(),
            "--out",
            failed.toString(),
            "--ep-size",
            "4");
    assertEquals(2, missing.code());
    assertTrue(
        missing.err().contains("--input") && missing.err().contains("does not exist"),
        missing.err());
    // --force replaces
    ok("stats", "--permuted", permuteOnce().toString(), "--out", out.toString(), "--force");
    assertFalse(Files.exists(out.resolve("keep.txt")));
    assertTrue(Files.exists(out.resolve(StatsCommand.CHART)));
  }

  private static Path shared;

  private static synchronized Path permuteOnce() {
    if (shared == null) {
      shared = tmp.resolve("perm-shared");
      ok(
          "permute",
          "--input",
          tokens.toString(),
          "--out",
          shared.toString(),
          "--ep-size",
          "" + R,
          "--capacity-factor",
          "1.25",
          "--backend",
          "cpu");
    }
    return shared;
  }

  @Test
  void unpermuteCombinesOtherExpertOutputs() throws IOException {
    Path perm = permuteOnce();
    // expert outputs: the permuted rows with every hidden value zero
    Path zeros = tmp.resolve("expert-zeros");
    Dataset<Row> data = spark.read().parquet(dataset(perm, "data").toString());
    int hiddenAt = data.schema().fieldIndex("hidden");
    data.map(
            (MapFunction<Row, Row>)
                row -> {
                  Object[] v = new Object[row.size()];
                  for (int i = 0; i < v.length; i++) {
                    v[i] = row.get(i);
                  }
                  v[hiddenAt] = new byte[((byte[]) v[hiddenAt]).length];
                  return RowFactory.create(v);
                },
            Encoders.row(data.schema()))
        .write()
        .parquet(zeros.toString());
    Path comb = tmp.resolve("comb-zeros");
    JobCliTest.Result u =
        ok(
            "unpermute",
            "--permuted",
            perm.toString(),
            "--expert-out",
            zeros.toString(),
            "--out",
            comb.toString());
    assertTrue(u.out().contains("combined from " + zeros), u.out());
    List<Row> rows = spark.read().parquet(dataset(comb, "combined").toString()).collectAsList();
    assertEquals(N, rows.size());
    for (Row r : rows) {
      for (byte b : (byte[]) r.get(r.fieldIndex("hidden"))) {
        assertEquals(0, b);
      }
    }
    assertFalse(
        manifest(comb.resolve("manifest.json")).get("input").get("identity_experts").asBoolean());
    JobCliTest.Result v =
        ok("verify", "--permuted", perm.toString(), "--combined", comb.toString());
    assertTrue(v.out().contains("--combined was not checked"), v.out());
  }

  // ---------------------------------------------------------------- stats

  @Test
  void statsDrawsTheChartAndComputesImbalance() throws IOException {
    Path perm = permuteOnce();
    Path out = tmp.resolve("stats");
    JobCliTest.Result r =
        ok(
            "stats",
            "--permuted",
            perm.toString(),
            "--out",
            out.toString(),
            "--width",
            "800",
            "--height",
            "400");
    assertTrue(r.out().contains("stats: chart " + out + "/expert_load.png"), r.out());
    long bytes = 0;
    for (String f : List.of(StatsCommand.CHART, StatsCommand.REPORT, StatsCommand.JSON)) {
      bytes += Files.size(out.resolve(f));
    }
    String summary = r.out().lines().toList().get(2);
    assertTrue(
        summary.matches(
            Pattern.quote(
                    "stats: "
                        + (N / T) * E
                        + " rows of tokens per expert ("
                        + N / T
                        + " batches, "
                        + E
                        + " experts, "
                        + R
                        + " ranks), 3 files, "
                        + BatchCounters.bytes(bytes)
                        + " in ")
                + "[0-9.]+ s"),
        summary);
    BufferedImage img = ImageIO.read(out.resolve(StatsCommand.CHART).toFile());
    assertEquals(800, img.getWidth());
    assertEquals(400, img.getHeight());
    Set<Integer> colours = new HashSet<>();
    for (int y = 0; y < img.getHeight(); y++) {
      for (int x = 0; x < img.getWidth(); x++) {
        colours.add(img.getRGB(x, y) & 0xFFFFFF);
      }
    }
    for (int rank = 0; rank < R; rank++) {
      assertTrue(colours.contains(LoadChart.rankColor(rank).getRGB() & 0xFFFFFF), "rank " + rank);
    }
    JsonNode pm = manifest(perm.resolve("manifest.json"));
    long max = 0;
    long maxKept = 0;
    long sum = 0;
    long routed = 0;
    for (int e = 0; e < E; e++) {
      long k = pm.get("tokens_per_expert").get(e).asLong();
      long d = pm.get("dropped_per_expert").get(e).asLong();
      max = Math.max(max, k + d);
      maxKept = Math.max(maxKept, k);
      sum += k;
      routed += k + d;
    }
    assertEquals((long) N * K, routed, "every slot is valid: kept or dropped");
    JsonNode s = manifest(out.resolve(StatsCommand.JSON));
    assertEquals(max / (routed / (double) E), s.get("expert_imbalance").asDouble(), 1e-12);
    assertEquals(maxKept / (sum / (double) E), s.get("expert_imbalance_kept").asDouble(), 1e-12);
    assertTrue(s.get("expert_imbalance").asDouble() > s.get("expert_imbalance_kept").asDouble());
    long dropped = pm.get("dropped_slots").asLong();
    assertEquals(dropped / (double) (dropped + sum), s.get("drop_rate").asDouble(), 1e-12);
    assertEquals(4, s.get("per_batch").size());
    assertEquals(R, s.get("per_rank").size());
    String report = Files.readString(out.resolve(StatsCommand.REPORT));
    assertTrue(report.contains("![tokens per expert](expert_load.png)"), report);
    assertTrue(report.contains("expert imbalance"), report);
    assertTrue(report.contains("## Per batch"), report);
  }

  @Test
  void theChartIsDrawnWithoutFonts() throws IOException {
    ExpertLoad load = new ExpertLoad(io.moeprep.kernels.contract.ExpertPlacement.contiguous(8, 2));
    for (int e = 0; e < 8; e++) {
      load.add(0, e, 10 * (e + 1), e);
    }
    LoadChart c = new LoadChart(300, 200, false);
    BufferedImage img = ImageIO.read(new java.io.ByteArrayInputStream(c.png(load, "t")));
    assertEquals(300, img.getWidth());
    assertFalse(c.textFailed());
    assertEquals(
        LoadChart.rankColor(1).getRGB(), img.getRGB(268, 130), "the bar of expert 7 (rank 1)");
  }

  // ---------------------------------------------------------------- demo

  @Test
  void demoRunsEverythingInUnderTwoMinutes() throws IOException {
    Path out = tmp.resolve("demo-out");
    long start = System.nanoTime();
    JobCliTest.Result r = ok("demo", "--out", out.toString());
    double seconds = (System.nanoTime() - start) / 1e9;
    assertTrue(seconds < 120, "demo took " + seconds + " s");
    List<String> lines = new ArrayList<>(r.out().lines().toList());
    for (String p :
        List.of(
            "generate: 4096 tokens in 4 batches",
            "permute: 4096 tokens -> ",
            "unpermute: 4096 tokens",
            "verify: OK: 4 of 4 batches x 4 ranks",
            "stats: load imbalance (max/mean) over experts",
            "demo: done in ")) {
      assertTrue(lines.stream().anyMatch(l -> l.startsWith(p)), p + " in\n" + r.out());
    }
    assertTrue(r.out().contains("demo: chart " + out + "/stats/expert_load.png"), r.out());
    for (String line : lines) {
      assertFalse(
          !line.startsWith("demo: ") && line.matches(".* in [0-9.]+ s"),
          "the demo has its own summary, not the commands': " + line);
    }
    assertEquals(1200, ImageIO.read(out.resolve("stats/expert_load.png").toFile()).getWidth());
    // a second run replaces the first
    ok("demo", "--out", out.toString(), "--tokens", "1024", "--capacity-factor", "0");
    assertEquals(1024, spark.read().parquet(out.resolve("tokens").toString()).count());
  }
}
