package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/** The command line: help, and usage errors as one line with exit code 2, before Spark starts. */
class JobCliTest {
  private static final Supplier<SparkSession> NO_SPARK =
      () -> {
        throw new AssertionError("a usage error must not start Spark");
      };

  record Result(int code, String out, String err) {}

  static Result run(Supplier<SparkSession> spark, String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code =
        JobMain.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8),
            spark);
    return new Result(
        code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  @ParameterizedTest
  @ValueSource(strings = {"generate", "permute", "unpermute", "verify", "stats", "demo"})
  void everySubcommandHasHelp(String cmd) {
    Result r = run(NO_SPARK, cmd, "--help");
    assertEquals(0, r.code());
    assertTrue(r.out().startsWith("usage: moeprep " + cmd), r.out());
    assertTrue(r.out().contains("options"), r.out());
    assertEquals("", r.err());
  }

  static final List<String> COMMANDS =
      List.of("generate", "permute", "unpermute", "verify", "stats", "demo");

  @Test
  void topLevelHelpListsTheCommands() {
    Result r = run(NO_SPARK, "--help");
    assertEquals(0, r.code());
    for (String c : COMMANDS) {
      assertTrue(r.out().contains("  " + c + " "), c);
    }
    Result none = run(NO_SPARK);
    assertEquals(2, none.code());
    assertTrue(none.err().startsWith("usage: moeprep"));
  }

  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "frobnicate|command 'frobnicate' is unknown",
        "generate|option --out is missing: give --out DIR",
        "generate --out x --tokens many|--tokens 'many' is invalid: must be an integer",
        "generate --out x --dtype f64|--dtype 'f64' is invalid: must be one of",
        "generate --out x --experts 16 --groups 3|--groups 3 is invalid: must divide --experts",
        "generate --out x --colour red|option --colour is unknown to 'generate'",
        "generate --out|option --out needs a value",
        "generate stray|argument 'stray' is unexpected",
        "generate --out x --score relu|--score 'relu' is invalid: must be one of softmax, sigmoid",
        "permute --input t --out o|option --ep-size is missing",
        "permute --input t --out o --ep-size 4 --capacity 3 --num-out 9|exclude each other",
        "permute --input t --out o --ep-size 4 --num-out 9 --align 4|--align cannot be combined",
        "permute --input t --out o --ep-size 4 --pad-to-capacity|--pad-to-capacity needs",
        "permute --input t --out o --ep-size 4 --layout columns|--layout 'columns' is invalid",
        "unpermute --permuted p|option --out is missing",
        "verify --batches -1 --permuted p|--batches -1 is invalid",
        "stats|option --permuted is missing",
        "stats --permuted p --width 10|--width 10 is invalid: must be in [200, 20000]",
        "demo --capacity-factor x|--capacity-factor 'x' is invalid"
      })
  void usageErrorsAreOneLineNamingTheOption(String line, String expected) {
    Result r = run(NO_SPARK, line.split(" "));
    assertEquals(2, r.code(), r.err());
    assertTrue(r.err().contains(expected), r.err());
    assertEquals(1, r.err().lines().count(), "one line: " + r.err());
    assertTrue(r.err().startsWith("moeprep"), r.err());
  }

  @Test
  void theHelpCommandShowsACommandsHelp() {
    Result r = run(NO_SPARK, "help", "permute");
    assertEquals(0, r.code(), r.err());
    assertTrue(r.out().startsWith("usage: moeprep permute --input TOKENS --out DIR"), r.out());
    assertTrue(r.out().contains("--capacity-factor F"), r.out());
  }

  /** Inputs that do not exist and outputs that do are reported before Spark starts. */
  @Test
  void pathsAreCheckedBeforeSparkStarts(@TempDir Path dir) throws IOException {
    Path exists = Files.createDirectories(dir.resolve("exists"));
    Path missing = dir.resolve("missing");
    Path fresh = dir.resolve("fresh");
    String[][] cases = {
      {
        "generate --out " + exists,
        "output " + exists + " exists: choose another --out or add --force"
      },
      {
        "permute --input " + missing + " --out " + fresh + " --ep-size 4",
        "--input " + missing + " does not exist: fix --input"
      },
      {
        "permute --input " + exists + " --out " + exists + " --ep-size 4",
        "output " + exists + " exists"
      },
      {
        "permute --input " + exists + " --out " + fresh + " --ep-size 4",
        "option --experts is missing: give --experts E (--input has no _manifest.json"
      },
      {
        "unpermute --permuted " + missing + " --out " + fresh,
        "--permuted " + missing + " does not exist"
      },
      {"verify --permuted " + missing, "--permuted " + missing + " does not exist"},
      {"stats --permuted " + missing, "--permuted " + missing + " does not exist"}
    };
    for (String[] c : cases) {
      long start = System.nanoTime();
      Result r = run(NO_SPARK, c[0].split(" "));
      assertEquals(2, r.code(), c[0] + ": " + r.err());
      assertTrue(r.err().contains(c[1]), c[0] + ": " + r.err());
      assertEquals(1, r.err().lines().count(), "one line: " + r.err());
      assertTrue((System.nanoTime() - start) / 1e9 < 10, c[0] + " was slow");
    }
    assertFalse(Files.exists(fresh), "nothing written");
  }

  /** Bad spark.moeprep.* settings (-D, spark-submit --conf) are reported before Spark starts. */
  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "spark.moeprep.backend|gpu|'gpu' in spark.moeprep.backend is invalid: must be one of auto,"
            + " cpu, cuda",
        "spark.moeprep.tokensPerBatch|0|'0' in spark.moeprep.tokensPerBatch is invalid: must be in"
            + " [1, 2147483647]",
        "spark.moeprep.gpu.memoryLimit|lots|'lots' in spark.moeprep.gpu.memoryLimit is invalid",
        "spark.moeprep.bakend|cpu|spark.moeprep.bakend is not a MoePrep setting"
      })
  void badSettingsAreOneLineBeforeSparkStarts(String key, String value, String expected) {
    System.setProperty(key, value);
    try {
      for (String cmd : List.of("generate --out x", "permute --input t --out o --ep-size 2")) {
        Result r = run(NO_SPARK, cmd.split(" "));
        assertEquals(2, r.code(), r.err());
        assertTrue(
            r.err().startsWith("moeprep " + cmd.split(" ")[0] + ": error: " + expected), r.err());
        assertEquals(1, r.err().lines().count(), "one line: " + r.err());
        assertFalse(r.err().contains("Exception"), r.err());
      }
    } finally {
      System.clearProperty(key);
    }
  }

  @Test
  void sparkThatDoesNotStartIsAnUnavailableResource(@TempDir Path dir) {
    AtomicInteger asked = new AtomicInteger();
    Result r =
        run(
            () -> {
              asked.incrementAndGet();
              throw new IllegalStateException("no master at spark://nowhere:7077");
            },
            "generate",
            "--out",
            dir.resolve("tokens").toString());
    assertEquals(1, asked.get(), "the options and paths are fine: Spark is asked for");
    assertEquals(2, r.code(), r.err());
    assertEquals(
        "moeprep generate: error: Spark did not start: no master at spark://nowhere:7077\n",
        r.err());
  }
}
