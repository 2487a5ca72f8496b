package io.moeprep.app.bench;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.cuda.CudaDevice;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.cuda.DeviceBuffer;
import io.moeprep.kernels.cuda.DeviceKernels;
import io.moeprep.kernels.cuda.DeviceRouting;
import io.moeprep.kernels.cuda.DeviceRows;
import io.moeprep.kernels.cuda.PermuteLauncher;
import io.moeprep.kernels.cuda.RoutingMapLauncher;
import io.moeprep.kernels.cuda.UnpermuteLauncher;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * Times the CUDA kernels on device-resident BF16 batches: map building ({@code
 * RoutingMapLauncher.map}: the fused kernel where it applies, its wait for the layout included;
 * and, for comparison, the unfused plan + buildMaps with their host round trip), permute (data
 * movement) and unpermute with probs, each as the median of many runs timed with CUDA events,
 * against a device-to-device copy ({@code cuMemcpyDtoD}) that moves the same number of bytes,
 * measured in the same run.
 *
 * <p>Bytes moved: permute reads each token row that has a kept slot once and writes every output
 * row; unpermute reads every kept row and writes every token row; a copy of B bytes reads and
 * writes B, so the baseline copies half the operation's traffic and {@code ratio = copy time /
 * operation time}. Map building moves the routing (read twice), the row map, the sources and probs.
 *
 * <p>Rows {@code map total} (launch, kernel and the wait for the layout), {@code map async} (launch
 * and kernel, no wait), {@code map queued} (ten maps queued back to back, per map: about the
 * kernel's own time); {@code permute+map} is the synchronous call a user makes (the maps, the wait
 * for the layout, then the permute into outputs of that size), its ratio against the permute's copy
 * (the map's own traffic is not counted).
 *
 * <pre>java ... io.moeprep.app.bench.CudaBenchmark [iterations] [case indices, e.g. 0,2]</pre>
 */
public final class CudaBenchmark {
  private CudaBenchmark() {}

  private record Case(long n, int e, int h, int k, int epSize, int rank) {
    String label() {
      return "N="
          + n
          + " E="
          + e
          + " H="
          + h
          + " K="
          + k
          + (rank >= 0 ? " rank " + rank + "/" + epSize : "");
    }
  }

  public static void main(String[] args) {
    int iters = args.length > 0 ? Integer.parseInt(args[0]) : 30;
    CudaSupport.Probe probe = CudaSupport.probe();
    if (!probe.available()) {
      System.err.println("CUDA unavailable: " + probe.reason());
      System.exit(2);
    }
    CudaDevice dev = CudaDevice.get(0);
    System.out.println("device: " + dev + ", iterations per measurement: " + iters);
    List<Case> cases =
        List.of(
            new Case(4096, 256, 7168, 8, 1, -1),
            new Case(16384, 128, 4096, 6, 1, -1),
            new Case(16384, 4, 7168, 1, 1, -1),
            new Case(262144, 256, 7168, 8, 8, 0),
            new Case(262144, 256, 7168, 8, 1, -1));
    List<String> rows = new ArrayList<>();
    rows.add(
        String.format(
            Locale.ROOT,
            "| %-36s | %-11s | %9s | %8s | %9s | %8s | %6s |",
            "case",
            "op",
            "ms",
            "GB/s",
            "copy ms",
            "copy GB/s",
            "ratio"));
    rows.add(
        "|"
            + "-".repeat(38)
            + "|"
            + "-".repeat(13)
            + "|"
            + "-".repeat(11)
            + "|"
            + "-".repeat(10)
            + "|"
            + "-".repeat(11)
            + "|"
            + "-".repeat(10)
            + "|"
            + "-".repeat(8)
            + "|");
    // warm-up pass: JIT-compiled host code and clocks, before anything is reported
    try {
      run(dev, new Case(4096, 256, 7168, 8, 1, -1), 200);
    } catch (RuntimeException e) {
      System.out.println("warm-up failed: " + e);
    }
    String only = args.length > 1 ? args[1] : "";
    for (int i = 0; i < cases.size(); i++) {
      Case c = cases.get(i);
      if (!only.isEmpty() && !Arrays.asList(only.split(",")).contains(Integer.toString(i))) {
        continue;
      }
      try {
        rows.addAll(run(dev, c, iters));
      } catch (RuntimeException e) {
        rows.add("| " + c.label() + " | skipped: " + e.getMessage());
      }
      System.out.println(rows.get(rows.size() - 1));
    }
    rows.add("");
    rows.add(overheads(dev));
    System.out.println();
    System.out.println("device: " + dev.name());
    rows.forEach(System.out::println);
  }

  private static List<String> run(CudaDevice dev, Case c, int iters) {
    DeviceKernels k = DeviceKernels.on(dev, KernelTuning.DEFAULT);
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    PermuteOptions o =
        c.rank >= 0 ? PermuteOptions.forRank(c.e, c.epSize, c.rank) : PermuteOptions.of(c.e);
    boolean[] local = o.localExperts();
    long n = c.n;
    int kk = c.k;
    long slots = n * kk;
    long rowBytes = 2L * c.h;
    // routing: K distinct uniform experts per token, as a router's top-k; random probs
    SplittableRandom rnd = new SplittableRandom(42);
    long keptRows = 0;
    long readRows = 0;
    List<String> out = new ArrayList<>();
    try (HostBuffer routing = HostBuffer.allocate(slots * 4);
        HostBuffer probs = HostBuffer.allocate(slots * 4)) {
      int[] perm = new int[c.e];
      for (long t = 0; t < n; t++) {
        for (int i = 0; i < c.e; i++) {
          perm[i] = i;
        }
        boolean any = false;
        for (int j = 0; j < kk; j++) {
          int pick = j + rnd.nextInt(c.e - j);
          int id = perm[pick];
          perm[pick] = perm[j];
          perm[j] = id;
          routing.putInt(4 * (t * kk + j), id);
          probs.putFloat(4 * (t * kk + j), (float) rnd.nextDouble());
          if (local[id]) {
            keptRows++;
            any = true;
          }
        }
        if (any) {
          readRows++;
        }
      }
      final long kept = keptRows;
      long permBytes = (readRows + keptRows) * rowBytes;
      long unpermBytes = (keptRows + n) * rowBytes;
      long copyBytes = Math.max(permBytes, unpermBytes) / 2;
      long need = n * rowBytes * 2 + keptRows * rowBytes + copyBytes + slots * 16 + keptRows * 20;
      long free = dev.memoryInfo()[0];
      if (need > free - (1L << 30)) {
        throw new IllegalStateException(
            "needs " + (need >> 20) + " MiB of device memory, " + (free >> 20) + " MiB free");
      }
      try (DeviceBuffer dRouting = DeviceBuffer.allocate(dev, slots * 4);
          DeviceBuffer dProbs = DeviceBuffer.allocate(dev, slots * 4);
          DeviceBuffer dTokens = DeviceBuffer.allocate(dev, n * rowBytes);
          DeviceBuffer dRowId = DeviceBuffer.allocate(dev, slots * 4);
          DeviceBuffer dSrcToken = DeviceBuffer.allocate(dev, keptRows * 8);
          DeviceBuffer dSrcSlot = DeviceBuffer.allocate(dev, keptRows * 8);
          DeviceBuffer dPermProbs = DeviceBuffer.allocate(dev, keptRows * 4);
          DeviceBuffer dPermuted = DeviceBuffer.allocate(dev, keptRows * rowBytes);
          DeviceBuffer dOut = DeviceBuffer.allocate(dev, n * rowBytes);
          DeviceBuffer dCopy = DeviceBuffer.allocate(dev, copyBytes);
          RoutingMapLauncher.RoutingScratch scratch = k.routingMap().scratch(n, kk, c.e)) {
        DeviceRouting dr = new DeviceRouting(dRouting.address(), dProbs.address(), n, kk);
        k.copies().copyToDevice(dRouting.address(), routing.address(), slots * 4, s);
        k.copies().copyToDevice(dProbs.address(), probs.address(), slots * 4, s);
        // bf16 1.0 in every element: the content does not change the timing
        check(JCudaDriver.cuMemsetD32Async(deviceptr(dTokens), 0x3F803F80, n * rowBytes / 4, s));
        dev.synchronize(s);

        Timer timer = new Timer(s);
        long[] numOut = new long[1];
        double planMs =
            timer.median(
                iters,
                () -> {
                  try (RoutingMapLauncher.RoutingPlan p = k.routingMap().plan(dr, o, scratch, s)) {
                    numOut[0] = p.numOut();
                  }
                });
        if (numOut[0] != keptRows) {
          throw new IllegalStateException("numOut " + numOut[0] + " != " + keptRows);
        }
        // map = mapAsync + the wait for the layout (numOut); without the wait, the device-side
        // cost of the maps in a pipeline that sizes its outputs for the worst case (no padding
        // here)
        boolean[] waitForLayout = {true};
        java.util.function.Supplier<RoutingMapLauncher.DeviceMaps> launchMap =
            () -> k.routingMap().mapAsync(dr, o, dRowId.address(), scratch, s);
        Runnable mapping =
            () -> {
              try (RoutingMapLauncher.DeviceMaps m = launchMap.get()) {
                if (waitForLayout[0]) {
                  numOut[0] = m.numOut();
                }
              }
            };
        double mapMs = timer.median(iters, mapping);
        if (numOut[0] != keptRows) {
          throw new IllegalStateException("map numOut " + numOut[0] + " != " + keptRows);
        }
        // the host's side of map total (host clock): the call until the kernel is queued, then
        // the wait for the layout
        double[] hostLaunchUs = new double[iters];
        double[] hostWaitUs = new double[iters];
        for (int i = 0; i < iters; i++) {
          long t0 = System.nanoTime();
          try (RoutingMapLauncher.DeviceMaps m = launchMap.get()) {
            long t1 = System.nanoTime();
            m.numOut();
            hostWaitUs[i] = (System.nanoTime() - t1) / 1e3;
            hostLaunchUs[i] = (t1 - t0) / 1e3;
          }
          dev.synchronize(s);
        }
        Arrays.sort(hostLaunchUs);
        Arrays.sort(hostWaitUs);
        waitForLayout[0] = false;
        double asyncMs = timer.median(iters, mapping);
        // the device's time per map: ten queued back to back, so that the host's launch work
        // overlaps the kernels
        double backToBackMs =
            timer.median(
                    iters,
                    () -> {
                      for (int i = 0; i < 10; i++) {
                        mapping.run();
                      }
                    })
                / 10;
        RoutingMapLauncher.MapOutputs outputs =
            new RoutingMapLauncher.MapOutputs(
                dRowId.address(), dSrcToken.address(), dSrcSlot.address(), dPermProbs.address());
        double unfusedMs =
            timer.median(
                iters,
                () -> {
                  try (RoutingMapLauncher.RoutingPlan p = k.routingMap().plan(dr, o, scratch, s)) {
                    k.routingMap().buildMaps(p, outputs, s);
                  }
                });
        PermuteLauncher.Rows rows =
            new PermuteLauncher.Rows(
                new DeviceRows(dTokens.address(), n, c.h, DType.BF16),
                kk,
                dRowId.address(),
                dSrcToken.address(),
                new DeviceRows(dPermuted.address(), kept, c.h, DType.BF16),
                false);
        UnpermuteLauncher.Combine combine =
            new UnpermuteLauncher.Combine(
                new DeviceRows(dPermuted.address(), kept, c.h, DType.BF16),
                dRowId.address(),
                dProbs.address(),
                kk,
                new DeviceRows(dOut.address(), n, c.h, DType.BF16));
        Runnable permute = () -> k.permute().permuteRows(rows, s);
        // the synchronous call a user makes: the maps, the wait for the layout (the output size),
        // then the permute into outputs of that size
        Runnable permuteWithMap =
            () -> {
              try (RoutingMapLauncher.DeviceMaps m =
                  k.routingMap().map(dr, o, dRowId.address(), scratch, s)) {
                k.permute()
                    .permuteRows(
                        new PermuteLauncher.Rows(
                            rows.tokens(),
                            kk,
                            dRowId.address(),
                            m.srcToken(),
                            new DeviceRows(dPermuted.address(), m.numOut(), c.h, DType.BF16),
                            m.hasPadding()),
                        s);
              }
            };
        Runnable unpermute = () -> k.unpermute().unpermute(combine, s);
        double permMs = timer.median(iters, permute);
        double unpermMs = timer.median(iters, unpermute);
        double permMapMs = timer.median(iters, permuteWithMap);
        long permCopy = permBytes / 2;
        long unpermCopy = unpermBytes / 2;
        DeviceBuffer src = dPermuted.size() >= copyBytes ? dPermuted : dOut;
        double permCopyMs =
            timer.median(iters, () -> k.copies().copy(dCopy.address(), src.address(), permCopy, s));
        double unpermCopyMs =
            timer.median(
                iters, () -> k.copies().copy(dCopy.address(), src.address(), unpermCopy, s));
        long mapBytes = slots * 4 * 3 + keptRows * (8 + 8 + 4) + slots * 4;
        out.add(row(c.label(), "map total", mapMs, mapBytes, Double.NaN, 0));
        out.add(row(c.label(), "map async", asyncMs, mapBytes, Double.NaN, 0));
        out.add(row(c.label(), "map queued", backToBackMs, mapBytes, Double.NaN, 0));
        out.add(row(c.label(), "map unfused", unfusedMs, mapBytes, Double.NaN, 0));
        out.add(row(c.label(), "map unfused plan", planMs, slots * 4 * 2, Double.NaN, 0));
        out.add(row(c.label(), "permute", permMs, permBytes, permCopyMs, permCopy * 2));
        out.add(row(c.label(), "permute+map", permMapMs, permBytes, permCopyMs, permCopy * 2));
        out.add(row(c.label(), "unpermute", unpermMs, unpermBytes, unpermCopyMs, unpermCopy * 2));
        out.add(
            String.format(
                Locale.ROOT,
                "| %-36s | map/permute = %.1f%% (async %.1f%%, queued %.1f%%, unfused %.1f%%; numOut"
                    + " %d, tokens read %d; host: map call %.1f us, layout wait %.1f us)",
                c.label(),
                100 * mapMs / permMs,
                100 * asyncMs / permMs,
                100 * backToBackMs / permMs,
                100 * unfusedMs / permMs,
                keptRows,
                readRows,
                hostLaunchUs[iters / 2],
                hostWaitUs[iters / 2]));
      }
    }
    return out;
  }

  /**
   * The fixed costs under map building, timed on the host: one kernel launch through JCuda (queued
   * back to back), and one round trip (8 bytes device to pinned host, then a stream synchronise).
   */
  private static String overheads(CudaDevice dev) {
    DeviceKernels k = DeviceKernels.on(dev, KernelTuning.DEFAULT);
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    int reps = 2000;
    try (DeviceBuffer a = DeviceBuffer.allocate(dev, 1 << 16);
        DeviceBuffer b = DeviceBuffer.allocate(dev, 1 << 16);
        io.moeprep.kernels.cuda.PinnedBuffer h =
            io.moeprep.kernels.cuda.PinnedBuffer.allocate(dev, 64)) {
      check(JCudaDriver.cuMemsetD32Async(deviceptr(b), -1, 1, s));
      // one token whose only slot is -1: a launch that does no work
      PermuteLauncher.Rows idle =
          new PermuteLauncher.Rows(
              new DeviceRows(a.address(), 1, 8, DType.BF16),
              1,
              b.address(),
              0,
              new DeviceRows(a.address(), 0, 8, DType.BF16),
              false);
      double launchUs = 0;
      double tripUs = 0;
      for (int round = 0; round < 2; round++) { // the first round warms up
        long t0 = System.nanoTime();
        for (int i = 0; i < reps; i++) {
          k.permute().permuteRows(idle, s);
        }
        dev.synchronize(s);
        launchUs = (System.nanoTime() - t0) / 1e3 / reps;
        t0 = System.nanoTime();
        for (int i = 0; i < reps; i++) {
          k.copies().copyToHost(h.address(), a.address(), 8, s);
          dev.synchronize(s);
        }
        tripUs = (System.nanoTime() - t0) / 1e3 / reps;
      }
      return String.format(
          Locale.ROOT,
          "fixed costs (host clock): one kernel launch %.1f us, one device-to-host round trip %.1f us;"
              + " unfused map building = 3 launches + 1 round trip + 1 small host-to-device copy;"
              + " fused = 1 launch + 1 round trip; async = 1 launch",
          launchUs,
          tripUs);
    }
  }

  private static String row(
      String label, String op, double ms, long bytes, double copyMs, long copyTraffic) {
    double gbs = bytes / (ms * 1e6);
    if (Double.isNaN(copyMs)) {
      return String.format(
          Locale.ROOT,
          "| %-36s | %-11s | %9.4f | %8.1f | %9s | %8s | %6s |",
          label,
          op,
          ms,
          gbs,
          "",
          "",
          "");
    }
    double copyGbs = copyTraffic / (copyMs * 1e6);
    return String.format(
        Locale.ROOT,
        "| %-36s | %-11s | %9.4f | %8.1f | %9.4f | %8.1f | %6.3f |",
        label,
        op,
        ms,
        gbs,
        copyMs,
        copyGbs,
        copyMs / ms);
  }

  private static jcuda.driver.CUdeviceptr deviceptr(DeviceBuffer b) {
    return new jcuda.driver.CUdeviceptr().withByteOffset(b.address());
  }

  private static void check(int rc) {
    if (rc != 0) {
      throw new IllegalStateException("CUDA error " + rc);
    }
  }

  /** Median time of an operation on one stream, by CUDA events around each run. */
  private static final class Timer {
    private final CUstream stream;
    private final CUevent start = new CUevent();
    private final CUevent stop = new CUevent();

    Timer(CUstream stream) {
      this.stream = stream;
      check(JCudaDriver.cuEventCreate(start, 0));
      check(JCudaDriver.cuEventCreate(stop, 0));
    }

    double median(int iters, Runnable op) {
      // warm-up: JIT-compiled host code, clocks up; at least 20 runs and 50 ms
      long until = System.nanoTime() + 50_000_000L;
      for (int i = 0; i < 20 || System.nanoTime() < until; i++) {
        op.run();
        if (i % 8 == 7) {
          check(JCudaDriver.cuStreamSynchronize(stream));
        }
      }
      check(JCudaDriver.cuStreamSynchronize(stream));
      double[] ms = new double[iters];
      float[] t = new float[1];
      for (int i = 0; i < iters; i++) {
        check(JCudaDriver.cuEventRecord(start, stream));
        op.run();
        check(JCudaDriver.cuEventRecord(stop, stream));
        check(JCudaDriver.cuEventSynchronize(stop));
        check(JCudaDriver.cuEventElapsedTime(t, start, stop));
        ms[i] = t[0];
      }
      Arrays.sort(ms);
      return ms[iters / 2];
    }
  }
}
