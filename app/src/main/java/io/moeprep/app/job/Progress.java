package io.moeprep.app.job;

import java.io.PrintStream;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskEnd;

/**
 * Progress of a long command on stderr: one line when a step ends, with its elapsed time and the
 * Spark tasks it ran, and while a step runs, a line at most every few seconds with the tasks
 * finished so far (a {@link SparkListener} counts them).
 */
final class Progress extends SparkListener {
  private final PrintStream err;
  private final String command;
  private final long intervalNanos;
  private final AtomicInteger submitted = new AtomicInteger();
  private final AtomicInteger finished = new AtomicInteger();
  private final AtomicLong lastPrint = new AtomicLong(System.nanoTime());
  private volatile String step = "";
  private volatile long stepStart = System.nanoTime();

  Progress(PrintStream err, String command, long intervalMillis) {
    this.err = err;
    this.command = command;
    this.intervalNanos = intervalMillis * 1_000_000L;
  }

  /** A step; closing it prints its line. */
  Step step(String name) {
    return new Step(name);
  }

  @Override
  public void onStageSubmitted(SparkListenerStageSubmitted e) {
    submitted.addAndGet(e.stageInfo().numTasks());
  }

  @Override
  public void onTaskEnd(SparkListenerTaskEnd e) {
    int done = finished.incrementAndGet();
    if (step.isEmpty()) {
      return; // no step of this command runs (another reporter covers the tasks)
    }
    long now = System.nanoTime();
    long last = lastPrint.get();
    if (now - last >= intervalNanos && lastPrint.compareAndSet(last, now)) {
      err.printf(
          Locale.ROOT,
          "  %s %s: %d/%d tasks finished, %.1f s%n",
          command,
          step,
          done,
          submitted.get(),
          (now - stepStart) / 1e9);
    }
  }

  /** One step of a command. */
  final class Step implements AutoCloseable {
    private final String name;
    private final long start = System.nanoTime();
    private final int tasksBefore = finished.get();
    private double seconds = -1;

    private Step(String name) {
      this.name = name;
      step = name;
      stepStart = start;
    }

    /** Seconds since the step started (final once closed). */
    double seconds() {
      return seconds >= 0 ? seconds : (System.nanoTime() - start) / 1e9;
    }

    /** Ends the step successfully: prints its line; returns its seconds. */
    double done() {
      end("done in");
      return seconds;
    }

    /** Ends the step; without {@link #done()} first, it stopped (an error follows). */
    @Override
    public void close() {
      end("stopped after");
    }

    private void end(String what) {
      if (seconds >= 0) {
        return;
      }
      seconds = (System.nanoTime() - start) / 1e9;
      int tasks = finished.get() - tasksBefore;
      err.printf(
          Locale.ROOT,
          "  %s %s: %s %.2f s%s%n",
          command,
          name,
          what,
          seconds,
          tasks > 0 ? " (" + tasks + " Spark tasks)" : "");
    }
  }
}
