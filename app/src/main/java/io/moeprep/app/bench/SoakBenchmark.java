package io.moeprep.app.bench;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.workload.SyntheticRouting;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Soak: permute and unpermute of fresh batches in a loop on one backend, printing the throughput of
 * every batch, then the median of the last tenth against the first tenth (after one warm-up batch)
 * and the host memory in use before and after. Exits 1 when the run degraded by more than 20% or
 * memory did not return to its start.
 *
 * <pre>java -cp ... io.moeprep.app.bench.SoakBenchmark [auto|cpu|cuda] [batches] [seed]</pre>
 */
public final class SoakBenchmark {
  private SoakBenchmark() {}

  public static void main(String[] args) {
    BackendChoice choice = BackendChoice.parse(args.length > 0 ? args[0] : "auto");
    int batches = args.length > 1 ? Integer.parseInt(args[1]) : 100;
    long seed = args.length > 2 ? Long.parseLong(args[2]) : System.nanoTime();
    MoeKernels kernels = MoeKernels.create(choice);
    long n = 8192;
    int h = 4096;
    int k = 8;
    int e = 64;
    DType d = DType.BF16;
    PermuteOptions opts = PermuteOptions.forRank(e, 4, 0);
    System.out.printf(
        "soak: backend %s, %d batches of N=%d H=%d K=%d E=%d %s (rank 0 of 4), seed %d%n",
        kernels.backend().name(), batches, n, h, k, e, d.cliName(), seed);
    SplittableRandom rnd = new SplittableRandom(seed);
    long liveBefore = HostBuffer.liveBuffers();
    long bytesBefore = HostBuffer.bytesInUse();
    double[] gbs = new double[batches + 1];
    long rowBytes = d.rowBytes(h);
    try (HostBuffer tokens = HostBuffer.allocate(n * rowBytes);
        HostBuffer routing = HostBuffer.allocate(n * k * 4);
        HostBuffer probs = HostBuffer.allocate(n * k * 4)) {
      for (long i = 0; i + 8 <= tokens.size(); i += 8) {
        tokens.putLong(i, rnd.nextLong() & 0xBFFFBFFFBFFFBFFFL);
      }
      for (int b = 0; b <= batches; b++) {
        SyntheticRouting.fill(rnd, routing, probs, n, k, e, 0.05);
        PermuteInput in = new PermuteInput(tokens, n, h, d, routing, k, probs);
        long t0 = System.nanoTime();
        long moved;
        try (PermuteResult r = kernels.permute(in, opts);
            HostBuffer out =
                kernels.unpermute(
                    new UnpermuteInput(
                        r.permuted(), r.numOut(), r.rowIdMap(), n, k, h, d, probs))) {
          moved = (3 * r.numOut() + out.size() / rowBytes) * rowBytes;
        }
        double ms = (System.nanoTime() - t0) / 1e6;
        gbs[b] = moved / ms / 1e6;
        if (b > 0) {
          System.out.printf("batch %3d  %8.2f ms  %7.2f GB/s%n", b, ms, gbs[b]);
        }
      }
    }
    int tenth = Math.max(1, batches / 10);
    double first = median(Arrays.copyOfRange(gbs, 1, 1 + tenth));
    double last = median(Arrays.copyOfRange(gbs, batches + 1 - tenth, batches + 1));
    boolean memOk =
        HostBuffer.liveBuffers() == liveBefore && HostBuffer.bytesInUse() == bytesBefore;
    System.out.printf(
        "first %d batches %.2f GB/s, last %d batches %.2f GB/s: ratio last/first %.3f%n",
        tenth, first, tenth, last, last / first);
    System.out.printf(
        "host memory in use: %d bytes in %d buffers before, %d bytes in %d buffers after%n",
        bytesBefore, liveBefore, HostBuffer.bytesInUse(), HostBuffer.liveBuffers());
    boolean ok = last / first >= 0.8 && memOk;
    System.out.println(ok ? "soak: OK, no degradation" : "soak: DEGRADED");
    System.exit(ok ? 0 : 1);
  }

  private static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    return s[s.length / 2];
  }
}
