package io.moeprep.app.job;

import java.io.PrintStream;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BiConsumer;
import org.apache.spark.SparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskEnd;

/**
 * Progress of a long command on stderr: one line when a step ends, with its elapsed time and the
 * Spark tasks it ran, and while a step runs, a line at most every few seconds with the tasks of
 * that step finished so far (a {@link SparkListener} counts them).
 *
 * <p>Counts are per step: a step owns the stages submitted while it runs (its jobs carry its tag as
 * a local property of the {@link SparkContext}; an untagged stage submitted while it runs is its
 * too), and only their tasks count. Once a step has printed its last line, nothing more is printed
 * for it, even when Spark's listener bus delivers its last events later.
 */
final class Progress extends SparkListener {
  /** The local property that tags a step's Spark jobs. */
  static final String STEP_PROPERTY = "moeprep.progress.step";

  private static final AtomicLong TAGS = new AtomicLong();

  private final PrintStream err;
  private final String command;
  private final long intervalNanos;
  private final BiConsumer<String, String> localProperty;
  private final AtomicLong lastPrint = new AtomicLong(System.nanoTime());
  private volatile Step current;

  /**
   * A reporter for {@code command}'s steps, printing to {@code err} at most every {@code
   * intervalMillis} while a step runs.
   *
   * @param spark the context whose jobs the steps tag, or null (no tags: a step owns the stages
   *     submitted while it runs)
   */
  Progress(PrintStream err, String command, long intervalMillis, SparkContext spark) {
    this.err = err;
    this.command = command;
    this.intervalNanos = intervalMillis * 1_000_000L;
    this.localProperty = spark == null ? (k, v) -> {} : spark::setLocalProperty;
  }

  /** Starts a step; closing it prints its line. */
  Step step(String name) {
    Step s = new Step(name, command + "/" + TAGS.incrementAndGet());
    current = s;
    localProperty.accept(STEP_PROPERTY, s.tag);
    return s;
  }

  @Override
  public void onStageSubmitted(SparkListenerStageSubmitted e) {
    Properties p = e.properties();
    stageSubmitted(
        e.stageInfo().stageId(),
        e.stageInfo().numTasks(),
        p == null ? null : p.getProperty(STEP_PROPERTY));
  }

  @Override
  public void onTaskEnd(SparkListenerTaskEnd e) {
    taskEnded(e.stageId());
  }

  /** A stage of {@code tasks} tasks was submitted, by a job tagged {@code tag} (or null). */
  void stageSubmitted(int stageId, int tasks, String tag) {
    Step s = current;
    if (s != null && (tag == null || tag.equals(s.tag))) {
      s.stages.add(stageId);
      s.submitted.addAndGet(tasks);
    }
  }

  /** A task of stage {@code stageId} ended: counted by the step that owns the stage, if it runs. */
  void taskEnded(int stageId) {
    Step s = current;
    if (s == null || !s.stages.contains(stageId)) {
      return;
    }
    int done = s.finished.incrementAndGet();
    long now = System.nanoTime();
    long last = lastPrint.get();
    if (now - last >= intervalNanos && lastPrint.compareAndSet(last, now)) {
      s.printProgress(done, now);
    }
  }

  /** One step of a command. */
  final class Step implements AutoCloseable {
    private final String name;
    private final String tag;
    private final long start = System.nanoTime();
    private final Set<Integer> stages = ConcurrentHashMap.newKeySet();
    private final AtomicInteger submitted = new AtomicInteger();
    private final AtomicInteger finished = new AtomicInteger();
    private double seconds = -1;

    private Step(String name, String tag) {
      this.name = name;
      this.tag = tag;
    }

    /** Seconds since the step started (final once closed). */
    synchronized double seconds() {
      return seconds >= 0 ? seconds : (System.nanoTime() - start) / 1e9;
    }

    /** Ends the step successfully: prints its line; returns its seconds. */
    double done() {
      end("done in");
      return seconds();
    }

    /** Ends the step; without {@link #done()} first, it stopped (an error follows). */
    @Override
    public void close() {
      end("stopped after");
    }

    private synchronized void printProgress(int done, long now) {
      if (seconds >= 0) {
        return; // ended: its last line is out
      }
      err.printf(
          Locale.ROOT,
          "  %s %s: %d/%d tasks finished, %.1f s%n",
          command,
          name,
          done,
          submitted.get(),
          (now - start) / 1e9);
    }

    private void end(String what) {
      synchronized (this) {
        if (seconds >= 0) {
          return;
        }
        seconds = (System.nanoTime() - start) / 1e9;
        int tasks = finished.get();
        err.printf(
            Locale.ROOT,
            "  %s %s: %s %.2f s%s%n",
            command,
            name,
            what,
            seconds,
            tasks > 0 ? " (" + tasks + " Spark tasks)" : "");
      }
      if (current == this) {
        current = null;
        localProperty.accept(STEP_PROPERTY, null);
      }
    }
  }
}
