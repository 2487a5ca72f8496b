package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * One source of the segment layout: what {@code moeprep_map_fused} publishes (numOut, kept counts,
 * segment offsets), computed here on the CPU exactly as phase 3 of {@code map_fused} in
 * routing_map.cu does it from the arguments the launcher passes ({@link
 * RoutingMapLauncher.FusedCapacity}), equals {@link SegmentLayout#of} for every capacity mode,
 * padding and alignment; the upper bound the launcher sizes the fused kernel's outputs by holds it.
 * The device side of the same check is {@code FusedLayoutGpuTest}; the host also checks every fused
 * launch's layout against SegmentLayout's when it waits for it.
 */
class FusedLayoutTest {

  /**
   * Phase 3 of map_fused, line for line: {@code valid} are the valid counts of the local experts (0
   * for the others: the kernel masks them); returns numOut, then kept [E], then offsets [E + 1].
   */
  static long[] kernelLayout(
      long[] valid, boolean[] local, RoutingMapLauncher.FusedCapacity cap, int align) {
    int e = valid.length;
    long[] kept = valid.clone();
    long[] offsets = new long[e + 1];
    if (cap.mode() == RoutingMapLauncher.CAP_NUM_OUT) {
      // kept(e) = min(valid(e), max(0, M - valid slots of the experts before e))
      long before = 0;
      for (int x = 0; x < e; x++) {
        long prefix = before;
        before += kept[x];
        kept[x] = Math.min(kept[x], Math.max(0, cap.cap() - prefix));
      }
    }
    long[] rows = new long[e];
    for (int x = 0; x < e; x++) {
      long k = kept[x];
      if (cap.mode() == RoutingMapLauncher.CAP_PER_EXPERT) {
        k = Math.min(k, cap.cap());
        kept[x] = k;
      }
      long r = k;
      if (local[x] && cap.mode() == RoutingMapLauncher.CAP_PER_EXPERT && cap.padToCap()) {
        r = cap.cap();
      }
      if (local[x] && align > 1) {
        r = (r + align - 1) / align * align;
      }
      rows[x] = r;
    }
    long total = 0;
    for (int x = 0; x < e; x++) {
      offsets[x] = total;
      total += rows[x];
    }
    offsets[e] = total;
    long numOut = cap.mode() == RoutingMapLauncher.CAP_NUM_OUT ? Math.max(cap.cap(), total) : total;
    long[] out = new long[1 + e + e + 1];
    out[0] = numOut;
    System.arraycopy(kept, 0, out, 1, e);
    System.arraycopy(offsets, 0, out, 1 + e, e + 1);
    return out;
  }

  @Test
  void theKernelsLayoutIsSegmentLayoutsForEveryCapacityMode() {
    SplittableRandom rnd = Seeds.fresh("FusedLayoutTest.theKernelsLayoutIsSegmentLayouts");
    int cases = 0;
    for (int rep = 0; rep < 4000; rep++) {
      int e = 1 + rnd.nextInt(rnd.nextBoolean() ? 8 : RoutingMapLauncher.FUSED_MAX_EXPERTS);
      boolean[] local = new boolean[e];
      long[] valid = new long[e];
      double density = rnd.nextDouble();
      for (int x = 0; x < e; x++) {
        local[x] = rnd.nextDouble() < 0.7;
        valid[x] = local[x] && rnd.nextDouble() < density ? rnd.nextLong(50) : 0;
      }
      int mode = rep % 4;
      int align = mode == 3 ? 1 : (rnd.nextBoolean() ? 1 : 1 + rnd.nextInt(16));
      CapacityPolicy cap =
          switch (mode) {
            case 0 -> CapacityPolicy.none();
            case 1 -> CapacityPolicy.perExpert(rnd.nextLong(40), false);
            case 2 -> CapacityPolicy.perExpert(rnd.nextLong(40), true);
            default -> CapacityPolicy.numOut(rnd.nextLong(300));
          };
      RoutingMapLauncher.FusedCapacity fc = RoutingMapLauncher.FusedCapacity.of(cap);
      long[] kernel = kernelLayout(valid, local, fc, align);
      SegmentLayout l = SegmentLayout.of(valid, local, cap, align);
      String what = "case " + rep + ": E=" + e + " " + cap + " align " + align;
      assertEquals(l.numOut(), kernel[0], "numOut, " + what);
      for (int x = 0; x < e; x++) {
        assertEquals(l.kept(x), kernel[1 + x], "kept(" + x + "), " + what);
      }
      for (int x = 0; x <= e; x++) {
        assertEquals(l.offset(x), kernel[1 + e + x], "offset(" + x + "), " + what);
      }
      long slots = 0;
      for (long v : valid) {
        slots += v;
      }
      // the fused kernel's sources are sized by this bound: every row it writes must fit
      var options =
          new io.moeprep.kernels.contract.PermuteOptions(
              e, io.moeprep.kernels.contract.ExpertPlacement.contiguous(e, 1), 0, cap, align);
      if (allLocal(local)) {
        assertTrue(RoutingMapLauncher.outputBound(slots, options) >= l.numOut(), "bound, " + what);
      }
      cases++;
    }
    assertTrue(cases > 1000);
  }

  @Test
  void theLauncherEncodesEachCapacityModeAsTheKernelReadsIt() {
    assertEquals(
        new RoutingMapLauncher.FusedCapacity(RoutingMapLauncher.CAP_NONE, 0, false),
        RoutingMapLauncher.FusedCapacity.of(CapacityPolicy.none()));
    assertEquals(
        new RoutingMapLauncher.FusedCapacity(RoutingMapLauncher.CAP_PER_EXPERT, 7, true),
        RoutingMapLauncher.FusedCapacity.of(CapacityPolicy.perExpert(7, true)));
    assertEquals(
        new RoutingMapLauncher.FusedCapacity(RoutingMapLauncher.CAP_NUM_OUT, 99, false),
        RoutingMapLauncher.FusedCapacity.of(CapacityPolicy.numOut(99)));
  }

  /**
   * The scratch offsets the launcher passes and reads: the device scratch holds kept [E], offsets
   * [E + 1], the mask (8-byte aligned after it) and then the table; the fused result in pinned
   * memory is numOut, valid [E], offsets [E + 1], then the sequence number, which is what
   * routing_map.cu writes (its indices are pinned by CudaConstantsTest).
   */
  @Test
  void theScratchRegionsDoNotOverlap() {
    for (int e = 1; e <= RoutingMapLauncher.FUSED_MAX_EXPERTS + 300; e++) {
      long kept = RoutingMapLauncher.RoutingScratch.keptAt(e);
      long mask = RoutingMapLauncher.RoutingScratch.maskAt(e);
      long table = RoutingMapLauncher.RoutingScratch.tableAt(e);
      assertEquals(8L * e, kept, "kept after the E valid counts");
      assertEquals(kept + 8L * (2L * e + 1), mask, "mask after kept and offsets");
      assertTrue(table >= mask + e && table % 8 == 0, "table after the mask, aligned");
      int stride = RoutingMapLauncher.fusedStride(e);
      assertTrue(stride >= e && stride % 4 == 0, "a table row holds every expert");
      if (e <= RoutingMapLauncher.FUSED_MAX_EXPERTS) {
        assertTrue(stride <= 4 * LaunchGeometry.BLOCK, "kFusedMaxStride");
      }
    }
  }

  private static boolean allLocal(boolean[] local) {
    for (boolean l : local) {
      if (!l) {
        return false;
      }
    }
    return true;
  }
}
