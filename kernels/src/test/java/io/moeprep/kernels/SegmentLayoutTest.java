package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.SegmentLayout;
import org.junit.jupiter.api.Test;

/** Which expert owns each output row, with empty segments, padding and numOut's zero tail. */
class SegmentLayoutTest {

  @Test
  void everyRowBelongsToTheExpertWhoseSegmentHoldsIt() {
    // experts 0..4: 2 kept, none, 3 kept (padded to 4 by align), none, 1 kept (padded to 4)
    long[] valid = {2, 0, 3, 0, 1};
    boolean[] local = {false, true, true, false, true};
    SegmentLayout l = SegmentLayout.of(valid, local, CapacityPolicy.NONE, 4);
    int[] want = {0, 0, 2, 2, 2, 2, 4, 4, 4, 4};
    assertEquals(want.length, l.numOut());
    for (int i = 0; i < want.length; i++) {
      assertEquals(want[i], l.expertOfRow(i), "row " + i);
    }
    assertThrows(IndexOutOfBoundsException.class, () -> l.expertOfRow(want.length));
    assertThrows(IndexOutOfBoundsException.class, () -> l.expertOfRow(-1));
  }

  @Test
  void numOutsZeroTailBelongsToNoExpert() {
    SegmentLayout l =
        SegmentLayout.of(
            new long[] {1, 2}, new boolean[] {true, true}, CapacityPolicy.numOut(6), 1);
    int[] want = {0, 1, 1, -1, -1, -1};
    for (int i = 0; i < want.length; i++) {
      assertEquals(want[i], l.expertOfRow(i), "row " + i);
    }
    assertEquals(3, l.numSegments());
    long[][] segments = {{0, 0, 1}, {1, 1, 3}, {-1, 3, 6}};
    for (int s = 0; s < segments.length; s++) {
      assertEquals(segments[s][0], l.segmentExpert(s), "owner of segment " + s);
      assertEquals(segments[s][1], l.segmentStart(s), "start of segment " + s);
      assertEquals(segments[s][2], l.segmentEnd(s), "end of segment " + s);
    }
    assertThrows(IndexOutOfBoundsException.class, () -> l.segmentEnd(3));
  }

  @Test
  void aLayoutWithoutRowsHasNoRowToAskAbout() {
    SegmentLayout l =
        SegmentLayout.of(new long[] {0}, new boolean[] {true}, CapacityPolicy.NONE, 1);
    assertThrows(IndexOutOfBoundsException.class, () -> l.expertOfRow(0));
  }
}
