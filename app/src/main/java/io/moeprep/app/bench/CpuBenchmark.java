package io.moeprep.app.bench;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.workload.SyntheticRouting;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Permute and unpermute throughput of the CPU backend, BF16, against a plain multi-threaded copy of
 * the same bytes on the same threads, measured in the same run. The copy is timed twice: into a
 * freshly allocated buffer (what permute does: it returns new buffers) and into a buffer already
 * touched (the memory-bandwidth ceiling).
 *
 * <pre>java -cp ... io.moeprep.app.bench.CpuBenchmark [iterations] [seed]</pre>
 */
public final class CpuBenchmark {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  private record Case(String name, long n, int h, int k, int e, int epSize) {}

  private static final Case[] CASES = {
    new Case("DeepSeek-like rank 0 of 8", 16384, 7168, 8, 256, 8),
    new Case("Mixtral-like one rank", 65536, 2048, 2, 64, 1),
  };

  private CpuBenchmark() {}

  public static void main(String[] args) {
    int iters = args.length > 0 ? Integer.parseInt(args[0]) : 7;
    long seed = args.length > 1 ? Long.parseLong(args[1]) : System.nanoTime();
    System.out.printf(
        "CPU benchmark: %d threads, %d iterations (median), seed %d%n",
        CpuPool.common().threads(), iters, seed);
    System.out.printf(
        "%-28s %-10s %9s %9s %12s %12s %10s %10s%n",
        "case", "op", "ms", "GB/s", "copy GB/s", "ceil GB/s", "vs copy", "vs ceil");
    for (Case c : CASES) {
      run(c, iters, new SplittableRandom(seed));
    }
  }

  private static void run(Case c, int iters, SplittableRandom rnd) {
    DType d = DType.BF16;
    long rowBytes = d.rowBytes(c.h);
    try (HostBuffer tokens = HostBuffer.allocate(c.n * rowBytes);
        HostBuffer routing = HostBuffer.allocate(c.n * c.k * 4);
        HostBuffer probs = HostBuffer.allocate(c.n * c.k * 4)) {
      fillBf16(tokens, rnd.nextLong());
      SyntheticRouting.fill(rnd, routing, probs, c.n, c.k, c.e, 0);
      PermuteInput in = new PermuteInput(tokens, c.n, c.h, d, routing, c.k, probs);
      PermuteOptions opts =
          c.epSize > 1 ? PermuteOptions.forRank(c.e, c.epSize, 0) : PermuteOptions.of(c.e);
      long numOut;
      try (PermuteResult r = CPU.permute(in, opts)) {
        numOut = r.numOut();
      }
      long permBytes = 2 * numOut * rowBytes;
      double permMs = median(iters, () -> CPU.permute(in, opts).close());

      double unpermMs;
      try (PermuteResult r = CPU.permute(in, opts)) {
        UnpermuteInput u =
            new UnpermuteInput(r.permuted(), numOut, r.rowIdMap(), c.n, c.k, c.h, d, probs);
        unpermMs = median(iters, () -> CPU.unpermute(u).close());
      }
      long unpermBytes = (numOut + c.n) * rowBytes;

      double[] copyPerm = copyRates(permBytes / 2, iters);
      double[] copyUnperm = copyRates(unpermBytes / 2, iters);
      String name = c.name + " N=" + c.n + " H=" + c.h + " K=" + c.k + " E=" + c.e;
      System.out.println(name + ", " + numOut + " output rows");
      print("", "permute", permMs, permBytes, copyPerm);
      print("", "unpermute", unpermMs, unpermBytes, copyUnperm);
    }
  }

  private static void print(String name, String op, double ms, long bytes, double[] copy) {
    double gbs = bytes / ms / 1e6;
    System.out.printf(
        "%-28s %-10s %9.2f %9.2f %12.2f %12.2f %10.2f %10.2f%n",
        name, op, ms, gbs, copy[0], copy[1], gbs / copy[0], gbs / copy[1]);
  }

  /**
   * GB/s (read + write) of a parallel copy of {@code bytes}: into fresh memory, into warm memory.
   */
  private static double[] copyRates(long bytes, int iters) {
    long rows = Math.max(1, bytes / 4096);
    try (HostBuffer src = HostBuffer.allocate(bytes);
        HostBuffer warm = HostBuffer.allocate(bytes)) {
      src.fill(0, bytes, (byte) 1);
      warm.fill(0, bytes, (byte) 0);
      double fresh =
          median(
              iters,
              () -> {
                try (HostBuffer dst = HostBuffer.allocate(bytes)) {
                  parallelCopy(src, dst, bytes, rows);
                }
              });
      double hot = median(iters, () -> parallelCopy(src, warm, bytes, rows));
      return new double[] {2.0 * bytes / fresh / 1e6, 2.0 * bytes / hot / 1e6};
    }
  }

  private static void parallelCopy(HostBuffer src, HostBuffer dst, long bytes, long rows) {
    long per = bytes / rows;
    CpuPool.common()
        .forRange(
            rows,
            16,
            (from, to) -> {
              long end = to == rows ? bytes : to * per;
              dst.copyFrom(from * per, src, from * per, end - from * per);
            });
  }

  private static double median(int iters, Runnable op) {
    // warm-up: until the JIT has compiled the loops (at least 3 runs and 1.5 s)
    long until = System.nanoTime() + 1_500_000_000L;
    for (int i = 0; i < 3 || System.nanoTime() < until; i++) {
      op.run();
    }
    double[] ms = new double[iters];
    for (int i = 0; i < iters; i++) {
      long t0 = System.nanoTime();
      op.run();
      ms[i] = (System.nanoTime() - t0) / 1e6;
    }
    Arrays.sort(ms);
    return ms[iters / 2];
  }

  private static void fillBf16(HostBuffer b, long seed) {
    long words = b.size() / 8;
    CpuPool.common()
        .forRange(
            words,
            1 << 16,
            (from, to) -> {
              SplittableRandom r = new SplittableRandom(seed + from);
              for (long i = from; i < to; i++) {
                // finite BF16 values in [-2, 2)
                b.putLong(8 * i, r.nextLong() & 0xBFFFBFFFBFFFBFFFL);
              }
            });
  }
}
