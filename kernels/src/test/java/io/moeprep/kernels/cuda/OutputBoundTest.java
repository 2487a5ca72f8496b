package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The fused map kernel writes its sources into buffers sized by {@code
 * RoutingMapLauncher.outputBound} before the counts are known: the bound must hold the real output
 * rows under every capacity policy, alignment and rank mask (no GPU needed).
 */
class OutputBoundTest {
  @Test
  void theBoundHoldsEveryLayout() {
    SplittableRandom rnd = Seeds.fresh("OutputBoundTest.theBoundHoldsEveryLayout");
    for (int i = 0; i < 20_000; i++) {
      int ranks = 1 + rnd.nextInt(8);
      int e = ranks * (1 + rnd.nextInt(16));
      PermuteOptions o = PermuteOptions.forRank(e, ranks, rnd.nextInt(ranks));
      boolean[] local = o.localExperts();
      long[] valid = new long[e];
      long slots = rnd.nextInt(50);
      for (int x = 0; x < e; x++) {
        valid[x] = local[x] ? rnd.nextInt(rnd.nextBoolean() ? 3 : 300) : 0;
        slots += valid[x] + (local[x] ? 0 : rnd.nextInt(100)); // other ranks' and -1 slots
      }
      long cap = rnd.nextInt(400);
      o =
          switch (rnd.nextInt(4)) {
            case 1 -> o.withCapacity(CapacityPolicy.numOut(rnd.nextLong(2 * slots + 2)));
            case 2 -> o.withCapacity(CapacityPolicy.perExpert(cap, false));
            case 3 -> o.withCapacity(CapacityPolicy.perExpert(cap, true));
            default -> o;
          };
      if (!(o.capacity() instanceof CapacityPolicy.NumOut)) { // the contract forbids both
        o = o.withAlign(1 + rnd.nextInt(rnd.nextBoolean() ? 2 : 64));
      }
      long numOut = SegmentLayout.of(valid, local, o.capacity(), o.align()).numOut();
      long bound = RoutingMapLauncher.outputBound(slots, o);
      assertTrue(numOut <= bound, "numOut " + numOut + " > bound " + bound + " for " + o);
    }
  }
}
