package io.moeprep.spark.rapids;

import ai.rapids.cudf.DeviceMemoryBufferView;
import ai.rapids.cudf.HostMemoryBuffer;

/**
 * Small device arrays read on the host (list offsets, token ids): metadata only, never hidden rows.
 * Each read is one synchronous copy through a temporary host buffer.
 */
final class HostCopies {
  private HostCopies() {}

  /** The {@code count} int32 values at a device address. */
  static int[] ints(long address, int count) {
    int[] v = new int[count];
    if (count > 0) {
      try (HostMemoryBuffer h = read(address, 4L * count)) {
        for (int i = 0; i < count; i++) {
          v[i] = h.getInt(4L * i);
        }
      }
    }
    return v;
  }

  /** The {@code count} int64 values at a device address. */
  static long[] longs(long address, int count) {
    long[] v = new long[count];
    if (count > 0) {
      try (HostMemoryBuffer h = read(address, 8L * count)) {
        for (int i = 0; i < count; i++) {
          v[i] = h.getLong(8L * i);
        }
      }
    }
    return v;
  }

  private static HostMemoryBuffer read(long address, long bytes) {
    HostMemoryBuffer h = HostMemoryBuffer.allocate(bytes);
    try (DeviceMemoryBufferView d = new DeviceMemoryBufferView(address, bytes)) {
      h.copyFromDeviceBuffer(d);
      return h;
    } catch (RuntimeException | Error e) {
      h.close();
      throw e;
    }
  }
}
