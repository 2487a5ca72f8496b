package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.moeprep.spark.SparkSessions;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An empty token table is valid input: every command succeeds on it, with empty outputs and
 * manifests that say 0.
 */
class EmptyInputTest {
  @TempDir Path tmp;

  private JsonNode manifest(Path dir, String name) throws Exception {
    return Json.MAPPER.readTree(dir.resolve(name).toFile());
  }

  @Test
  void everyCommandSucceedsOnAnEmptyTable() throws Exception {
    Path tokens = tmp.resolve("tokens");
    Path permuted = tmp.resolve("permuted");
    Path combined = tmp.resolve("combined");
    Path stats = tmp.resolve("stats");
    JobEndToEndTest.ok(
        "generate", "--out", tokens.toString(), "--tokens", "0", "--hidden", "8", "--experts", "8");
    JobCliTest.Result p =
        JobEndToEndTest.ok(
            "permute",
            "--input",
            tokens.toString(),
            "--out",
            permuted.toString(),
            "--ep-size",
            "2",
            "--bad-rows",
            "skip");
    assertTrue(p.out().startsWith("permute: 0 tokens -> 0 rows on 2 ranks"), p.out());
    JsonNode pm = manifest(permuted, PermuteCommand.MANIFEST);
    assertEquals(0, pm.get("input").get("rows").asLong());
    assertEquals(0, pm.get("rows_out").asLong());
    assertEquals(0, pm.get("batches").asLong());
    assertEquals(0, pm.get("kept_slots").asLong());
    assertEquals(0, pm.get("bad_rows").asLong());
    for (JsonNode r : pm.get("ranks")) {
      assertEquals(0, r.get("rows").asLong());
    }
    JobCliTest.Result u =
        JobEndToEndTest.ok(
            "unpermute", "--permuted", permuted.toString(), "--out", combined.toString());
    assertTrue(u.out().startsWith("unpermute: 0 tokens combined"), u.out());
    assertEquals(0, manifest(combined, UnpermuteCommand.MANIFEST).get("combined_tokens").asLong());
    JobCliTest.Result v =
        JobEndToEndTest.ok(
            "verify", "--permuted", permuted.toString(), "--combined", combined.toString());
    assertTrue(v.out().startsWith("verify: OK: 0 of 0 batches"), v.out());
    JobCliTest.Result s =
        JobEndToEndTest.ok("stats", "--permuted", permuted.toString(), "--out", stats.toString());
    assertTrue(s.out().contains("0.0% of slots dropped"), s.out());
    assertTrue(Files.size(stats.resolve(StatsCommand.CHART)) > 0);
    assertEquals(0, SparkSessions.local().read().parquet(tokens.toString()).count());
  }
}
