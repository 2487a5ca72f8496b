package io.moeprep.kernels.cpu;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The threads the CPU backend runs on: one per core by default ({@code -Dmoeprep.cpu.threads=N}
 * overrides). Work is split into contiguous ranges of a 64-bit index space.
 */
public final class CpuPool {
  private static final int THREADS =
      Integer.getInteger("moeprep.cpu.threads", Runtime.getRuntime().availableProcessors());
  private static final ForkJoinPool POOL = createPool(THREADS);

  private CpuPool() {}

  /** Worker count. */
  public static int threads() {
    return THREADS;
  }

  /** Work on the index range {@code [from, to)}. */
  @FunctionalInterface
  public interface RangeTask {
    void run(long from, long to);
  }

  /** Work on chunk {@code chunk} of {@code [from, to)}. */
  @FunctionalInterface
  public interface ChunkTask {
    void run(int chunk, long from, long to);
  }

  /**
   * Runs {@code task} over {@code [0, n)} split into ranges of at least {@code grain} indices, on
   * every worker, and waits.
   */
  public static void forRange(long n, long grain, RangeTask task) {
    int chunks = chunkCount(n, grain);
    forChunks(n, chunks, (c, from, to) -> task.run(from, to));
  }

  /** How many chunks {@link #forRange} would use for {@code n} indices and this grain. */
  public static int chunkCount(long n, long grain) {
    if (n <= 0) {
      return 0;
    }
    long byGrain = Math.max(1, n / Math.max(1, grain));
    return (int) Math.min(byGrain, 4L * THREADS);
  }

  /**
   * Runs {@code task} on exactly {@code chunks} near-equal consecutive ranges of {@code [0, n)}
   * (chunk {@code c} is {@code [n*c/chunks, n*(c+1)/chunks)}), in parallel, and waits.
   */
  public static void forChunks(long n, int chunks, ChunkTask task) {
    if (chunks <= 0) {
      return;
    }
    if (chunks == 1 || THREADS == 1) {
      for (int c = 0; c < chunks; c++) {
        task.run(c, bound(n, c, chunks), bound(n, c + 1, chunks));
      }
      return;
    }
    List<ForkJoinTask<?>> tasks = new ArrayList<>(chunks);
    for (int c = 0; c < chunks; c++) {
      final int chunk = c;
      tasks.add(
          ForkJoinTask.adapt(
              () -> task.run(chunk, bound(n, chunk, chunks), bound(n, chunk + 1, chunks))));
    }
    if (ForkJoinTask.inForkJoinPool() && ForkJoinTask.getPool() == POOL) {
      ForkJoinTask.invokeAll(tasks);
    } else {
      POOL.submit(() -> ForkJoinTask.invokeAll(tasks)).join();
    }
  }

  /** Start of chunk {@code c} of {@code chunks} over {@code [0, n)}; 64-bit safe. */
  public static long bound(long n, int c, int chunks) {
    // floor(n * c / chunks) without overflow: n = q * chunks + r
    return n / chunks * c + (n % chunks) * c / chunks;
  }

  private static ForkJoinPool createPool(int threads) {
    AtomicInteger ids = new AtomicInteger();
    return new ForkJoinPool(
        threads,
        pool -> {
          var t = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(pool);
          t.setName("moeprep-cpu-" + ids.incrementAndGet());
          t.setDaemon(true);
          return t;
        },
        null,
        false);
  }
}
