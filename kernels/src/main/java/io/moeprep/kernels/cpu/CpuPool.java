package io.moeprep.kernels.cpu;

import io.moeprep.kernels.KernelTuning;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A set of worker threads that the CPU backend (and the contract's checks) split work over: work is
 * cut into contiguous ranges of a 64-bit index space. There is one pool per thread count, made on
 * first use and shared by every caller that asks for that count ({@link #of}); nothing can change a
 * pool's size afterwards. Workers are daemon threads named {@code moeprep-cpu-T-i}.
 */
public final class CpuPool {
  private static final Map<Integer, CpuPool> POOLS = new ConcurrentHashMap<>();

  private final int threads;
  private final ForkJoinPool pool;

  private CpuPool(int threads) {
    this.threads = threads;
    this.pool = threads == 1 ? null : createPool(threads);
  }

  /**
   * The pool of {@code threads} workers ({@link KernelTuning#cpuThreads()}).
   *
   * @throws IllegalArgumentException when {@code threads < 1}
   */
  public static CpuPool of(int threads) {
    if (threads < 1) {
      throw new IllegalArgumentException("threads = " + threads + " is invalid: must be >= 1");
    }
    return POOLS.computeIfAbsent(threads, CpuPool::new);
  }

  /** The pool of {@link KernelTuning#DEFAULT}: one worker per core. */
  public static CpuPool common() {
    return of(KernelTuning.DEFAULT.cpuThreads());
  }

  /** Worker count. */
  public int threads() {
    return threads;
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
  public void forRange(long n, long grain, RangeTask task) {
    int chunks = chunkCount(n, grain);
    forChunks(n, chunks, (c, from, to) -> task.run(from, to));
  }

  /** How many chunks {@link #forRange} would use for {@code n} indices and this grain. */
  public int chunkCount(long n, long grain) {
    if (n <= 0) {
      return 0;
    }
    long byGrain = Math.max(1, n / Math.max(1, grain));
    return (int) Math.min(byGrain, 4L * threads);
  }

  /**
   * Runs {@code task} on exactly {@code chunks} near-equal consecutive ranges of {@code [0, n)}
   * (chunk {@code c} is {@code [n*c/chunks, n*(c+1)/chunks)}), in parallel, and waits.
   */
  public void forChunks(long n, int chunks, ChunkTask task) {
    if (chunks <= 0) {
      return;
    }
    if (chunks == 1 || pool == null) {
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
    if (ForkJoinTask.inForkJoinPool() && ForkJoinTask.getPool() == pool) {
      ForkJoinTask.invokeAll(tasks);
    } else {
      pool.submit(() -> ForkJoinTask.invokeAll(tasks)).join();
    }
  }

  /** Start of chunk {@code c} of {@code chunks} over {@code [0, n)}; 64-bit safe. */
  public static long bound(long n, int c, int chunks) {
    // floor(n * c / chunks) without overflow: n = q * chunks + r
    return n / chunks * c + (n % chunks) * c / chunks;
  }

  @Override
  public String toString() {
    return "CpuPool[" + threads + " threads]";
  }

  private static ForkJoinPool createPool(int threads) {
    AtomicInteger ids = new AtomicInteger();
    return new ForkJoinPool(
        threads,
        pool -> {
          var t = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(pool);
          t.setName("moeprep-cpu-" + threads + "-" + ids.incrementAndGet());
          t.setDaemon(true);
          return t;
        },
        null,
        false);
  }
}
