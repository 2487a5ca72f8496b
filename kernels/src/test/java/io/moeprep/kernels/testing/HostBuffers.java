package io.moeprep.kernels.testing;

import io.moeprep.kernels.memory.HostBuffer;

/** Host buffers built from small literal tables, for tests. */
public final class HostBuffers {
  private HostBuffers() {}

  /** A row-major int32 buffer of {@code rows} ({@code [rows.length, rows[0].length]}). */
  public static HostBuffer ints(int[][] rows) {
    int k = rows.length == 0 ? 0 : rows[0].length;
    HostBuffer b = HostBuffer.allocate((long) rows.length * k * 4);
    for (int t = 0; t < rows.length; t++) {
      for (int j = 0; j < k; j++) {
        b.putInt(4L * (t * k + j), rows[t][j]);
      }
    }
    return b;
  }
}
