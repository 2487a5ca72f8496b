package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.contract.RoutingMaps;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.LeakCheck;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** A mask map means the index map listing its set experts in ascending order. */
@ExtendWith(LeakCheck.class)
class RoutingMapsTest {

  @Test
  void maskMapBecomesAscendingIndexMapPaddedWithMinusOne() {
    boolean[][] mask = {
      {false, true, false, true}, {false, false, false, false}, {true, true, true, false}
    };
    try (HostBuffer m = HostBuffer.allocateZeroed(12);
        HostBuffer dense = HostBuffer.allocate(12 * 4)) {
      for (int t = 0; t < 3; t++) {
        for (int e = 0; e < 4; e++) {
          m.putByte(t * 4 + e, (byte) (mask[t][e] ? 1 : 0));
          dense.putFloat(4L * (t * 4 + e), 10 * t + e);
        }
      }
      try (RoutingMaps.IndexMap map = RoutingMaps.fromMask(m, dense, 3, 4)) {
        assertEquals(3, map.topK());
        int[] want = {1, 3, -1, -1, -1, -1, 0, 1, 2};
        float[] wantP = {1, 3, 0, 0, 0, 0, 20, 21, 22};
        for (int s = 0; s < 9; s++) {
          assertEquals(want[s], map.routing().getInt(4L * s), "slot " + s);
          assertEquals(wantP[s], map.probs().getFloat(4L * s), "prob " + s);
        }
      }
    }
  }
}
