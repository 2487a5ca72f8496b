package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.testing.Seeds;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Task retries, in a child JVM whose session tries each task twice (the shared test session's
 * {@code local[2]} never retries, and one JVM holds one SparkContext): every task fails on its
 * first attempt after a complete (rank, batch) file and part of another were staged, and succeeds
 * on the second. Exactly one file per (rank, batch) must appear, equal to its permute, and no
 * staging file.
 */
class TaskRetryTest {
  @TempDir Path dir;

  @Test
  void tasksThatFailOnceLeaveExactlyOneFilePerRankBatch() throws Exception {
    long seed = Seeds.fresh("TaskRetryTest").nextLong();
    Path out = dir.resolve("out");
    Path log = dir.resolve("child.log");
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(Arrays.asList(System.getProperty("moeprep.jvm.opens", "").trim().split("\\s+")));
    cmd.add("-Xmx1g");
    cmd.add("-cp");
    cmd.add(System.getProperty("java.class.path"));
    cmd.add(TaskRetryApp.class.getName());
    cmd.add(out.toString());
    cmd.add(Long.toString(seed));
    cmd.removeIf(String::isEmpty);
    Process p =
        new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    boolean done = p.waitFor(300, TimeUnit.SECONDS);
    if (!done) {
      p.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
    }
    String output = Files.readString(log, StandardCharsets.UTF_8);
    String tail = output.substring(Math.max(0, output.length() - 6000));
    assertTrue(done, "the child JVM did not finish in 300 s:\n" + tail);
    assertEquals(0, p.exitValue(), "the child JVM failed:\n" + tail);
    assertTrue(output.contains("failed task attempts: 2"), "two first attempts failed:\n" + tail);

    List<List<ShardFixture>> fixtures = TaskRetryApp.fixtures(seed);
    try {
      Set<String> want = new TreeSet<>(Set.of("_SUCCESS"));
      fixtures.forEach(part -> part.forEach(f -> want.add(f.file())));
      assertEquals(want, SinkFiles.list(out), "one file per (rank, batch), nothing staged");
      assertTrue(!Files.exists(out.resolve("_temporary")), "no staging directory");
      for (List<ShardFixture> part : fixtures) {
        for (ShardFixture f : part) {
          try (SafetensorsReader r = SafetensorsReader.open(out.resolve(f.file()))) {
            f.check(r);
          }
        }
      }
    } finally {
      fixtures.forEach(part -> part.forEach(ShardFixture::close));
    }
  }
}
