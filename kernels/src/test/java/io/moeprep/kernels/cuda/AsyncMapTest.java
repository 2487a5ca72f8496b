package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import jcuda.driver.CUstream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The pipeline without a host round trip: {@link DeviceKernels#mapAsync} queues the maps, the data
 * kernel runs into an output sized for the worst case before anyone asks for the layout, and the
 * result equals the CPU backend's, byte for byte. One scratch serves every batch, ranks change
 * between batches (a new mask while earlier work may be in flight).
 */
@Tag("gpu")
class AsyncMapTest extends GpuLeakCheck {
  private final MoeKernels cpu = MoeKernels.on(CpuBackend.INSTANCE);

  @Test
  void mapsFeedThePermuteWithoutWaiting() {
    SplittableRandom rnd = Seeds.fresh("AsyncMapTest.mapsFeedThePermuteWithoutWaiting");
    DeviceKernels k =
        DeviceKernels.on(((CudaBackend) CudaSupport.backend()).device(), KernelTuning.DEFAULT);
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    long n = 1000 + rnd.nextInt(3000);
    int h = 200;
    int kk = 4;
    int e = 64;
    long slots = n * kk;
    long rowBytes = h * 2L;
    try (RandomBatch b = RandomBatch.create(rnd, n, h, kk, e, DType.BF16, 0.1);
        DeviceBuffer tokens = DeviceBuffer.allocate(k.device(), n * rowBytes);
        DeviceBuffer routing = DeviceBuffer.allocate(k.device(), slots * 4);
        DeviceBuffer probs = DeviceBuffer.allocate(k.device(), slots * 4);
        DeviceBuffer rowId = DeviceBuffer.allocate(k.device(), slots * 4);
        DeviceBuffer permuted = DeviceBuffer.allocate(k.device(), slots * rowBytes);
        RoutingMapLauncher.RoutingScratch scratch = k.routingMap().scratch(n, kk, e)) {
      k.copies().copyToDevice(tokens.address(), b.tokens.address(), n * rowBytes, s);
      k.copies().copyToDevice(routing.address(), b.routing.address(), slots * 4, s);
      k.copies().copyToDevice(probs.address(), b.probs.address(), slots * 4, s);
      for (int batch = 0; batch < 6; batch++) {
        int ranks = 4;
        PermuteOptions o = PermuteOptions.forRank(e, ranks, rnd.nextInt(ranks));
        if (batch % 2 == 1) {
          o = o.withCapacity(CapacityPolicy.perExpert(rnd.nextInt(60), false));
        }
        try (RoutingMapLauncher.DeviceMaps m =
            k.routingMap()
                .mapAsync(
                    new DeviceRouting(routing.address(), probs.address(), n, kk),
                    o,
                    rowId.address(),
                    scratch,
                    s)) {
          // no padding under these options: the data kernel needs no output size
          k.permute()
              .permuteRows(
                  new PermuteLauncher.Rows(
                      new DeviceRows(tokens.address(), n, h, DType.BF16),
                      kk,
                      rowId.address(),
                      m.srcToken(),
                      new DeviceRows(permuted.address(), 0, h, DType.BF16),
                      false),
                  s);
          long numOut = m.numOut(); // waits now
          try (PermuteResult c = cpu.permute(b.input(true), o);
              HostBuffer g = HostBuffer.allocate(numOut * rowBytes);
              HostBuffer gRow = HostBuffer.allocate(slots * 4);
              HostBuffer gSrc = HostBuffer.allocate(numOut * 8);
              HostBuffer gProb = HostBuffer.allocate(numOut * 4)) {
            assertEquals(c.numOut(), numOut, "numOut of batch " + batch);
            k.copies().copyToHost(g.address(), permuted.address(), numOut * rowBytes, s);
            k.copies().copyToHost(gRow.address(), rowId.address(), slots * 4, s);
            k.copies().copyToHost(gSrc.address(), m.srcToken(), numOut * 8, s);
            k.copies().copyToHost(gProb.address(), m.permutedProbs(), numOut * 4, s);
            k.device().synchronize(s);
            String what = "batch " + batch + " " + o;
            CudaBackendTest.assertBytes(c.permuted(), g, "permuted, " + what);
            CudaBackendTest.assertBytes(c.rowIdMap(), gRow, "row map, " + what);
            CudaBackendTest.assertBytes(c.sourceToken(), gSrc, "sources, " + what);
            CudaBackendTest.assertBytes(c.permutedProbs(), gProb, "probs, " + what);
          }
        }
      }
    }
  }

  /**
   * One scratch over more launches than the fused kernel's table tags tell apart (512): batches
   * with other counts alternate, so every launch finds the previous launch's cells in the table and
   * must wait for its own; row map, sources and numOut equal the CPU backend's every time. 5 and
   * 100 experts take the small-grid table with 2 and 32 groups of 4 experts per row.
   */
  @Test
  void oneScratchOverManyLaunches() {
    SplittableRandom rnd = Seeds.fresh("AsyncMapTest.oneScratchOverManyLaunches");
    DeviceKernels k =
        DeviceKernels.on(((CudaBackend) CudaSupport.backend()).device(), KernelTuning.DEFAULT);
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    for (int e : new int[] {5, 100}) {
      long n = 500 + rnd.nextInt(500);
      int kk = 8;
      long slots = n * kk;
      PermuteOptions o = PermuteOptions.of(e);
      try (RandomBatch b0 = RandomBatch.create(rnd, n, 1, kk, e, DType.BF16, 0.2);
          RandomBatch b1 = RandomBatch.create(rnd, n, 1, kk, e, DType.BF16, 0.6);
          PermuteResult c0 = cpu.permute(b0.input(false), o);
          PermuteResult c1 = cpu.permute(b1.input(false), o);
          DeviceBuffer r0 = DeviceBuffer.allocate(k.device(), slots * 4);
          DeviceBuffer r1 = DeviceBuffer.allocate(k.device(), slots * 4);
          DeviceBuffer rowId = DeviceBuffer.allocate(k.device(), slots * 4);
          HostBuffer gRow = HostBuffer.allocate(slots * 4);
          HostBuffer gSrc0 = HostBuffer.allocate(c0.numOut() * 8);
          HostBuffer gSrc1 = HostBuffer.allocate(c1.numOut() * 8);
          RoutingMapLauncher.RoutingScratch scratch = k.routingMap().scratch(n, kk, e)) {
        k.copies().copyToDevice(r0.address(), b0.routing.address(), slots * 4, s);
        k.copies().copyToDevice(r1.address(), b1.routing.address(), slots * 4, s);
        for (int launch = 0; launch < 700; launch++) {
          boolean odd = launch % 2 == 1;
          PermuteResult c = odd ? c1 : c0;
          HostBuffer gSrc = odd ? gSrc1 : gSrc0;
          long routing = odd ? r1.address() : r0.address();
          try (RoutingMapLauncher.DeviceMaps m =
              k.routingMap()
                  .map(new DeviceRouting(routing, 0, n, kk), o, rowId.address(), scratch, s)) {
            String what = "E=" + e + ", launch " + launch;
            assertEquals(c.numOut(), m.numOut(), "numOut, " + what);
            k.copies().copyToHost(gRow.address(), rowId.address(), slots * 4, s);
            k.copies().copyToHost(gSrc.address(), m.srcToken(), c.numOut() * 8, s);
            k.device().synchronize(s);
            CudaBackendTest.assertBytes(c.rowIdMap(), gRow, "row map, " + what);
            CudaBackendTest.assertBytes(c.sourceToken(), gSrc, "sources, " + what);
          }
        }
      }
    }
  }
}
