package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Progress lines: counts per step, and nothing for a step after its last line. */
class ProgressTest {
  private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
  private final Progress progress =
      new Progress(new PrintStream(bytes, true, StandardCharsets.UTF_8), "unpermute", 0, null);

  /** The lines so far, with the seconds (which vary) replaced by S. */
  private List<String> lines() {
    return bytes
        .toString(StandardCharsets.UTF_8)
        .lines()
        .map(l -> l.replaceAll("[0-9]+\\.[0-9]+ s", "S s"))
        .toList();
  }

  @Test
  void countsArePerStepAndAFinishedStepPrintsNothingMore() {
    Progress.Step first = progress.step("combine");
    progress.stageSubmitted(1, 2, null);
    progress.taskEnded(1);
    progress.taskEnded(1);
    first.done();
    // late events of the finished step's stage, then a step of its own
    progress.taskEnded(1);
    Progress.Step second = progress.step("count");
    progress.taskEnded(1);
    progress.stageSubmitted(2, 3, null);
    progress.taskEnded(2);
    second.close();
    progress.taskEnded(2);
    assertEquals(
        List.of(
            "  unpermute combine: 1/2 tasks finished, S s",
            "  unpermute combine: 2/2 tasks finished, S s",
            "  unpermute combine: done in S s (2 Spark tasks)",
            "  unpermute count: 1/3 tasks finished, S s",
            "  unpermute count: stopped after S s (1 Spark tasks)"),
        lines());
  }

  @Test
  void aStageTaggedForAnotherStepIsNotCounted() {
    try (Progress.Step s = progress.step("write")) {
      progress.stageSubmitted(7, 4, "another command/1");
      progress.taskEnded(7);
      progress.stageSubmitted(8, 1, null);
      progress.taskEnded(8);
      s.done();
    }
    assertEquals(
        List.of(
            "  unpermute write: 1/1 tasks finished, S s",
            "  unpermute write: done in S s (1 Spark tasks)"),
        lines());
  }

  @Test
  void betweenStepsNothingIsPrinted() {
    progress.stageSubmitted(1, 5, null);
    progress.taskEnded(1);
    progress.step("manifest").done();
    progress.taskEnded(1);
    assertEquals(List.of("  unpermute manifest: done in S s"), lines());
  }
}
