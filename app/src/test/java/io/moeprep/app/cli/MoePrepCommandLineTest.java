package io.moeprep.app.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import org.junit.jupiter.api.Test;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** The exit codes and error lines that both command lines share. */
class MoePrepCommandLineTest {
  @Command(name = "tool", subcommands = Tool.Run.class)
  static final class Tool {
    @Mixin HelpOption help;

    @Command(name = "run", customSynopsis = "tool run --size N [--fail WHAT]")
    static final class Run {
      @Option(names = "--size", paramLabel = "N", required = true, description = "a size")
      int size;

      @Option(names = "--fail", paramLabel = "WHAT", description = "how to fail")
      String fail;

      @Mixin HelpOption help;
    }
  }

  record Result(int code, String out, String err) {}

  private static Result run(boolean verbose, MoePrepCommandLine.Action action, String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    MoePrepCommandLine cli =
        new MoePrepCommandLine(
            new Tool(),
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8),
            true,
            verbose);
    int code = cli.execute(args, action);
    return new Result(
        code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  /** Runs {@code tool run --size 1} whose action throws {@code t}. */
  private static Result failing(boolean verbose, Throwable t) {
    return run(
        verbose,
        spec -> {
          if (t instanceof Exception e) {
            throw e;
          }
          throw (Error) t;
        },
        "run",
        "--size",
        "1");
  }

  @Test
  void doneIsZeroAndTheOptionsAreTyped() {
    Result r =
        run(false, spec -> ((Tool.Run) spec.userObject()).size == 7 ? 0 : 1, "run", "--size=7");
    assertEquals(0, r.code(), r.err());
    assertEquals("", r.err());
  }

  @Test
  void helpIsZeroOnStdout() {
    Result r = run(false, spec -> 1, "run", "--help");
    assertEquals(0, r.code());
    assertTrue(r.out().startsWith("usage: tool run --size N [--fail WHAT]"), r.out());
    assertTrue(r.out().contains("options:"), r.out());
    assertTrue(r.out().contains("--size N"), "labels after a space, as the docs show: " + r.out());
    assertEquals("", r.err());
  }

  @Test
  void usageErrorsAreTwoWithOneLine() {
    String[][] cases = {
      {"run", "tool run: error: option --size is missing: give --size N"},
      {"run --size", "tool run: error: option --size needs a value"},
      {"run --size x", "tool run: error: --size 'x' is invalid: must be an integer in"},
      {"run --size 1 --colour red", "tool run: error: option --colour is unknown to 'run'"},
      {"run --size 1 stray", "tool run: error: argument 'stray' is unexpected"},
      {"walk", "tool: error: command 'walk' is unknown: must be one of run (see tool --help)"}
    };
    for (String[] c : cases) {
      Result r = run(false, spec -> 0, c[0].split(" "));
      assertEquals(2, r.code(), c[0]);
      assertTrue(r.err().startsWith(c[1]), c[0] + ": " + r.err());
      assertEquals(1, r.err().lines().count(), r.err());
    }
    Result none = run(false, spec -> 0);
    assertEquals(2, none.code());
    assertTrue(none.err().startsWith("usage: tool"), none.err());
  }

  @Test
  void badInputAndUnavailableResourcesAreTwoInTheUsersWords() {
    Object[][] cases = {
      {
        new RuntimeException("task failed", new IllegalArgumentException("--size 1 is too small")),
        "tool run: error: --size 1 is too small\n"
      },
      {
        new UncheckedIOException(new NoSuchFileException("x.npy")),
        "tool run: error: x.npy does not exist\n"
      },
      {
        new MoePrepCommandLine.Unavailable("backend cuda is unavailable: no driver", null),
        "tool run: error: backend cuda is unavailable: no driver\n"
      },
      {
        new OutOfMemoryError("Java heap space"),
        "tool run: error: out of memory: give the JVM more (JAVA_OPTS=-Xmx...) or the job less"
            + " data\n"
      }
    };
    for (Object[] c : cases) {
      Result r = failing(false, (Throwable) c[0]);
      assertEquals(2, r.code(), r.err());
      assertEquals(c[1], r.err());
    }
  }

  @Test
  void internalFailuresAreOneWithoutClassNamesUnlessVerbose() {
    Result r = failing(false, new IOException("disk on fire", new NullPointerException()));
    assertEquals(1, r.code());
    assertEquals("tool run: failed: disk on fire (MOEPREP_VERBOSE=1 shows more)\n", r.err());
    Result npe = failing(false, new NullPointerException());
    assertEquals(
        "tool run: failed: an internal error with no message (MOEPREP_VERBOSE=1 shows more)\n",
        npe.err());
    assertFalse(npe.err().contains("Exception"), npe.err());
    Result verbose = failing(true, new IllegalStateException("broken"));
    assertEquals(1, verbose.code());
    assertTrue(verbose.err().startsWith("tool run: failed: broken\n"), verbose.err());
    assertTrue(verbose.err().contains("java.lang.IllegalStateException: broken"), verbose.err());
    assertTrue(verbose.err().contains("\tat "), "the stack trace: " + verbose.err());
  }
}
