package io.moeprep.kernels.cuda;

/**
 * Launch geometry shared by the launchers of the row-moving kernels: the block size of every kernel
 * ({@code kBlockThreads} in common.cuh), the unit a row is moved in, the threads per row and the
 * grid of a row kernel.
 */
final class LaunchGeometry {
  /** Threads per block of every kernel but the unfused scatter ({@code kBlockThreads}). */
  static final int BLOCK = 256;

  private LaunchGeometry() {}

  /**
   * The largest unit in {16, 8, 4, 2, 1} bytes, at least {@code minBytes}, that divides the row
   * bytes and every address, so that each row is moved in aligned units.
   */
  static int unitBytes(long rowBytes, int minBytes, long... addresses) {
    for (int v = 16; v >= minBytes; v >>= 1) {
      boolean ok = rowBytes % v == 0;
      for (long a : addresses) {
        ok &= a % v == 0;
      }
      if (ok) {
        return v;
      }
    }
    throw new IllegalArgumentException(
        "device addresses must be aligned to the element size " + minBytes + " bytes");
  }

  /** Threads per row: a power of two up to a block, about units / unroll. */
  static int lanes(long units, int unroll) {
    long want = Math.max(1, ceilDiv(units, unroll));
    int l = 1;
    while (l < BLOCK && l < want) {
      l <<= 1;
    }
    return l;
  }

  /** Blocks of a row kernel: {@code BLOCK / lanes} rows per block, at most 32 per SM. */
  static long rowBlocks(CudaDevice device, long rows, int lanes) {
    long perBlock = BLOCK / lanes;
    return Math.min(ceilDiv(rows, perBlock), device.multiprocessors() * 32L);
  }

  static long ceilDiv(long a, long b) {
    return a == 0 ? 0 : (a + b - 1) / b;
  }
}
