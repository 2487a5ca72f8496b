package io.moeprep.it.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A newcomer who follows only the README: a fresh {@code git clone} of the committed tree (nothing
 * built, nothing carried over), then README's first command (the block between {@code <!--
 * demo-command -->} markers, else {@code bin/moeprep demo}) run as a shell would, with a timeout.
 * It must build what it needs, finish the demo in under two minutes after the build, print the
 * summary README shows (the lines of its {@code <!-- demo-output -->} block, timings aside) and
 * leave the chart where it says.
 *
 * <p>Skipped, with the reason, outside a git checkout or without git; {@code
 * -Dmoeprep.newcomer=false} skips it on purpose.
 */
class NewcomerDemoTest {
  static final String DEFAULT_COMMAND = "bin/moeprep demo";
  static final Pattern DONE = Pattern.compile("demo: done in ([0-9.]+) s");

  @TempDir Path tmp;

  @Test
  void readmeFirstCommandWorksOnAFreshClone() throws Exception {
    assumeTrue(!"false".equals(System.getProperty("moeprep.newcomer")), "-Dmoeprep.newcomer=false");
    Path repo = Path.of("").toAbsolutePath().getParent();
    assumeTrue(Files.exists(repo.resolve(".git")), "not a git checkout: " + repo);
    assumeTrue(run(tmp, 60, "git", "--version").code == 0, "git is not installed");

    Path clone = tmp.resolve("moeprep");
    Result cloned = run(tmp, 120, "git", "clone", "--quiet", repo.toString(), clone.toString());
    assertEquals(0, cloned.code, cloned.output);

    Path readme = clone.resolve("README.md");
    String text = Files.exists(readme) ? Files.readString(readme) : "";
    List<String> commands = block(text, "demo-command");
    String command = commands.isEmpty() ? DEFAULT_COMMAND : commands.get(0);
    assertTrue(command.contains("demo"), "README's first command is not the demo: " + command);

    Result demo = run(clone, 900, "bash", "-c", command);
    assertEquals(0, demo.code, "'" + command + "' failed:\n" + demo.output);
    String out = demo.output;

    Matcher done = DONE.matcher(out);
    assertTrue(done.find(), "no 'demo: done in' line:\n" + out);
    double seconds = Double.parseDouble(done.group(1));
    assertTrue(seconds < 120, "the demo took " + seconds + " s after the build:\n" + out);
    assertTrue(out.contains("verify: OK: 4 of 4 batches x 4 ranks"), out);

    // the summary README shows, line by line (timings vary, and the backend with the machine)
    String got = anyBackend(out);
    for (String line : block(text, "demo-output")) {
      if (line.startsWith("demo: done in") || line.contains(" s (") || line.startsWith("...")) {
        continue;
      }
      assertTrue(
          got.contains(anyBackend(line)), "README shows '" + line + "', the newcomer got:\n" + out);
    }

    // the chart, where the summary says
    Matcher chart = Pattern.compile("demo: chart (\\S+)").matcher(out);
    assertTrue(chart.find(), out);
    BufferedImage img = ImageIO.read(clone.resolve(chart.group(1)).toFile());
    assertEquals(1200, img.getWidth());
    assertEquals(600, img.getHeight());

    // the outputs agree with each other: every slot kept or dropped, stats from the same counts
    ObjectMapper json = new ObjectMapper();
    JsonNode permute = json.readTree(clone.resolve("moeprep-out/permuted/manifest.json").toFile());
    JsonNode stats = json.readTree(clone.resolve("moeprep-out/stats/stats.json").toFile());
    assertEquals(
        4096L * 4, permute.get("kept_slots").asLong() + permute.get("dropped_slots").asLong());
    assertEquals(permute.get("dropped_slots").asLong(), stats.get("dropped_slots").asLong());
    assertEquals(permute.get("tokens_per_expert"), stats.get("tokens_per_expert"));
    assertTrue(Files.exists(clone.resolve("moeprep-out/stats/report.md")));
  }

  private static String anyBackend(String s) {
    return s.replaceAll("backend [a-z+]+", "backend *");
  }

  /** The indented lines between {@code <!-- name -->} and {@code <!-- /name -->}. */
  static List<String> block(String text, String name) {
    List<String> out = new ArrayList<>();
    int from = text.indexOf("<!-- " + name + " -->");
    int to = text.indexOf("<!-- /" + name + " -->");
    if (from < 0 || to < from) {
      return out;
    }
    for (String l : text.substring(from, to).split("\n")) {
      if (l.startsWith("    ") && !l.isBlank()) {
        out.add(l.substring(4).strip());
      }
    }
    return out;
  }

  record Result(int code, String output) {}

  static Result run(Path dir, long timeoutSeconds, String... command)
      throws IOException, InterruptedException {
    Path log = Files.createTempFile("moeprep-newcomer", ".log");
    ProcessBuilder pb =
        new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true);
    pb.redirectOutput(log.toFile());
    Process p = pb.start();
    if (!p.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
      p.descendants().forEach(ProcessHandle::destroyForcibly);
      p.destroyForcibly();
      p.waitFor();
      return new Result(
          124,
          "timed out after "
              + timeoutSeconds
              + " s:\n"
              + Files.readString(log, StandardCharsets.UTF_8));
    }
    String output = Files.readString(log, StandardCharsets.UTF_8);
    Files.deleteIfExists(log);
    return new Result(p.exitValue(), output);
  }
}
