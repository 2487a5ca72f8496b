package io.moeprep.kernels.contract;

import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * The accepted input forms of a routing map, turned into the canonical int32 index map: int64 index
 * maps (checked and narrowed) and mask maps ({@code N x E} booleans, optionally with dense {@code N
 * x E} probs).
 */
public final class RoutingMaps {
  private RoutingMaps() {}

  /** An index map with its probs, owned by this object. */
  public record IndexMap(HostBuffer routing, HostBuffer probs, long numTokens, int topK)
      implements AutoCloseable {
    @Override
    public void close() {
      try (HostBuffer a = routing;
          HostBuffer b = probs) {
        // both closed
      }
    }
  }

  /**
   * Narrows an int64 {@code n x k} index map to int32, checking every entry against {@code
   * numExperts} first.
   *
   * @return a new int32 buffer, owned by the caller
   */
  public static HostBuffer narrowInt64(HostBuffer ids64, long n, int k, int numExperts) {
    ContractChecks.nonNegative("numTokens", n);
    ContractChecks.atLeastOne("topK", k);
    long slots = Math.multiplyExact(n, (long) k);
    ContractChecks.holds("routing", ids64, Math.multiplyExact(slots, 8L));
    for (long i = 0; i < slots; i++) {
      long v = ids64.getLong(8 * i);
      if (v < -1 || v >= numExperts) {
        throw ContractChecks.idOutOfRange("routing", i, k, v, numExperts);
      }
    }
    return Closeables.closeOnExcept(
        HostBuffer.allocate(slots * 4),
        out -> {
          CpuPool.common()
              .forRange(
                  slots,
                  1 << 16,
                  (from, to) -> {
                    for (long i = from; i < to; i++) {
                      out.putInt(4 * i, (int) ids64.getLong(8 * i));
                    }
                  });
          return out;
        });
  }

  /**
   * Converts a mask map to an index map. Slot {@code j} of token {@code t} is its {@code j}-th set
   * expert in ascending order, {@code -1} after the last; {@code K} is the largest number of set
   * experts of any token (at least 1).
   *
   * @param mask {@code n x numExperts} bytes, non-zero = routed
   * @param denseProbs {@code n x numExperts} float32, or {@code null}
   */
  public static IndexMap fromMask(HostBuffer mask, HostBuffer denseProbs, long n, int numExperts) {
    ContractChecks.nonNegative("numTokens", n);
    ContractChecks.atLeastOne("numExperts", numExperts);
    long cells = Math.multiplyExact(n, (long) numExperts);
    ContractChecks.holds("mask", mask, cells);
    if (denseProbs != null) {
      ContractChecks.holds("probs", denseProbs, Math.multiplyExact(cells, 4L));
    }
    int k = 1;
    for (long t = 0; t < n; t++) {
      int set = 0;
      for (int e = 0; e < numExperts; e++) {
        if (mask.getByte(t * numExperts + e) != 0) {
          set++;
        }
      }
      k = Math.max(k, set);
    }
    long slots = Math.multiplyExact(n, (long) k);
    HostBuffer routing = HostBuffer.allocate(slots * 4);
    HostBuffer probs =
        Closeables.closeOnExcept(
            () -> denseProbs == null ? null : HostBuffer.allocateZeroed(slots * 4), routing);
    int topK = k;
    return Closeables.closeOnExcept(
        new IndexMap(routing, probs, n, k),
        map -> {
          routing.fill(0, slots * 4, (byte) 0xFF);
          for (long t = 0; t < n; t++) {
            int j = 0;
            for (int e = 0; e < numExperts; e++) {
              long cell = t * numExperts + e;
              if (mask.getByte(cell) != 0) {
                routing.putInt(4 * (t * topK + j), e);
                if (probs != null) {
                  probs.putFloat(4 * (t * topK + j), denseProbs.getFloat(4 * cell));
                }
                j++;
              }
            }
          }
          return map;
        });
  }
}
