package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import jcuda.driver.CUstream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The device side of {@link FusedLayoutTest}: the layout that {@code moeprep_map_fused} publishes
 * equals {@link SegmentLayout#of} of the valid counts counted on the host, for every capacity mode,
 * padding and alignment, on masked ranks.
 */
@Tag("gpu")
class FusedLayoutGpuTest extends GpuLeakCheck {

  @Test
  void theFusedKernelsLayoutIsSegmentLayouts() {
    SplittableRandom rnd = Seeds.fresh("FusedLayoutGpuTest.theFusedKernelsLayoutIsSegmentLayouts");
    RoutingMapLauncher k =
        RoutingMapLauncher.on(((CudaBackend) CudaSupport.backend()).device(), KernelTuning.DEFAULT);
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    DeviceCopies copies = DeviceCopies.on(k.device());
    for (int c = 0; c < 48; c++) {
      long n = 1 + rnd.nextInt(3000);
      int kk = 1 + rnd.nextInt(8);
      int e = 1 + rnd.nextInt(c % 2 == 0 ? 16 : RoutingMapLauncher.FUSED_MAX_EXPERTS);
      int ranks = 1 + rnd.nextInt(Math.min(4, e));
      while (e % ranks != 0) { // contiguous placement: the ranks divide the experts
        ranks--;
      }
      PermuteOptions o = PermuteOptions.forRank(e, ranks, rnd.nextInt(ranks));
      int mode = c % 4;
      if (mode == 1 || mode == 2) {
        o = o.withCapacity(CapacityPolicy.perExpert(rnd.nextLong(2 * n * kk / e + 2), mode == 2));
      } else if (mode == 3) {
        o = o.withCapacity(CapacityPolicy.numOut(rnd.nextLong(n * kk + 1)));
      }
      if (mode != 3 && rnd.nextBoolean()) {
        o = o.withAlign(1 + rnd.nextInt(16));
      }
      long slots = n * kk;
      assertTrue(k.fuses(slots, o), "the fused kernel builds these maps");
      try (RandomBatch b = RandomBatch.create(rnd, n, 1, kk, e, DType.BF16, rnd.nextDouble());
          DeviceBuffer routing = DeviceBuffer.allocate(k.device(), slots * 4);
          DeviceBuffer rowId = DeviceBuffer.allocate(k.device(), slots * 4)) {
        copies.copyToDevice(routing.address(), b.routing.address(), slots * 4, s);
        boolean[] local = o.localExperts();
        long[] valid = new long[e];
        for (long i = 0; i < slots; i++) {
          int x = b.routing.getInt(4 * i);
          if (x >= 0 && local[x]) {
            valid[x]++;
          }
        }
        SegmentLayout want = SegmentLayout.of(valid, local, o.capacity(), o.align());
        try (RoutingMapLauncher.DeviceMaps m =
            k.map(new DeviceRouting(routing.address(), 0, n, kk), o, rowId.address(), null, s)) {
          SegmentLayout got = m.layout();
          String what = "case " + c + ": N=" + n + " K=" + kk + " " + o;
          assertEquals(want.numOut(), got.numOut(), "numOut, " + what);
          for (int x = 0; x <= e; x++) {
            assertEquals(want.offset(x), got.offset(x), "offset(" + x + "), " + what);
          }
          for (int x = 0; x < e; x++) {
            assertEquals(want.kept(x), got.kept(x), "kept(" + x + "), " + what);
          }
        }
      }
    }
  }
}
