package io.moeprep.kernels.contract;

/**
 * The output layout of one permute, derived from the per-expert counts of valid slots: how many
 * slots each expert keeps, how many it drops, and where its (padded) segment starts. This is the
 * capacity and alignment part of the contract in one place; every backend counts the valid slots
 * its own way and then calls {@link #of}.
 *
 * <p>Expert {@code e}'s kept rows are output rows {@code [offset(e), offset(e) + kept(e))}, its
 * zero padding rows follow up to {@code offset(e+1)}; under {@link CapacityPolicy.NumOut} the rows
 * {@code [offset(E), numOut)} are zero padding.
 */
public final class SegmentLayout {
  private final long[] kept;
  private final long[] dropped;
  private final long[] offsets;
  private final long numOut;

  private SegmentLayout(long[] kept, long[] dropped, long[] offsets, long numOut) {
    this.kept = kept;
    this.dropped = dropped;
    this.offsets = offsets;
    this.numOut = numOut;
  }

  /**
   * Computes the layout.
   *
   * @param valid per expert, the number of valid (non-{@code -1}, local) slots
   * @param local per expert, whether this permute owns it (padding applies to local experts only)
   * @throws IllegalArgumentException when the output would have {@code 2^31} rows or more
   */
  public static SegmentLayout of(
      long[] valid, boolean[] local, CapacityPolicy capacity, int align) {
    int e = valid.length;
    long[] kept = new long[e];
    long[] dropped = new long[e];
    long[] offsets = new long[e + 1];
    long remaining = capacity instanceof CapacityPolicy.NumOut n ? n.numOut() : Long.MAX_VALUE;
    for (int x = 0; x < e; x++) {
      long k = valid[x];
      if (capacity instanceof CapacityPolicy.PerExpert p) {
        k = Math.min(k, p.capacity());
      } else if (capacity instanceof CapacityPolicy.NumOut) {
        k = Math.min(k, remaining);
        remaining -= k;
      }
      kept[x] = k;
      dropped[x] = valid[x] - k;
      long rows = k;
      if (local[x] && capacity instanceof CapacityPolicy.PerExpert p && p.padToCapacity()) {
        rows = p.capacity();
      }
      if (local[x] && align > 1) {
        rows = (rows + align - 1) / align * align;
      }
      offsets[x + 1] = offsets[x] + rows;
    }
    long numOut =
        capacity instanceof CapacityPolicy.NumOut n ? Math.max(n.numOut(), offsets[e]) : offsets[e];
    if (numOut > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "output rows = "
              + numOut
              + " is invalid: must be < 2^31 (row ids are int32); lower the capacity or split the"
              + " batch");
    }
    return new SegmentLayout(kept, dropped, offsets, numOut);
  }

  /** Number of experts. */
  public int numExperts() {
    return kept.length;
  }

  /** Output rows, padding included. */
  public long numOut() {
    return numOut;
  }

  /** Kept slots of expert {@code e}. */
  public long kept(int e) {
    return kept[e];
  }

  /** First output row of expert {@code e}'s segment; {@code offset(E)} ends the last one. */
  public long offset(int e) {
    return offsets[e];
  }

  /**
   * The segments of the output rows, in row order: one per expert ({@code s < E}: rows {@code
   * [offset(s), offset(s+1))}), then the zero rows of {@code [offset(E), numOut)} that {@link
   * CapacityPolicy.NumOut} adds beyond the last expert ({@code s = E}, owned by no expert). Some
   * segments are empty.
   */
  public int numSegments() {
    return kept.length + 1;
  }

  /** The expert owning segment {@code s}, or {@code -1} for the tail {@code s = E}. */
  public int segmentExpert(int s) {
    java.util.Objects.checkIndex(s, kept.length + 1);
    return s < kept.length ? s : -1;
  }

  /** The first row of segment {@code s}. */
  public long segmentStart(int s) {
    return offsets[java.util.Objects.checkIndex(s, kept.length + 1)];
  }

  /** The row after the last of segment {@code s}. */
  public long segmentEnd(int s) {
    java.util.Objects.checkIndex(s, kept.length + 1);
    return s < kept.length ? offsets[s + 1] : numOut;
  }

  /**
   * The expert whose segment holds output row {@code row} (kept or padding), or {@code -1} for the
   * tail segment (see {@link #numSegments}). Experts with an empty segment own no row.
   *
   * @throws IndexOutOfBoundsException when {@code row} is outside {@code [0, numOut)}
   */
  public int expertOfRow(long row) {
    java.util.Objects.checkIndex(row, numOut);
    int e = kept.length;
    if (row >= offsets[e]) {
      return segmentExpert(e);
    }
    // the last expert whose segment starts at or before the row: empty segments end before it
    int lo = 0;
    int hi = e;
    while (hi - lo > 1) {
      int mid = (lo + hi) >>> 1;
      if (offsets[mid] <= row) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  /**
   * True when some output rows are zero padding (alignment, padding to capacity, or {@code numOut}
   * beyond the kept slots): the output has more rows than kept slots.
   */
  public boolean hasPadding() {
    long keptTotal = 0;
    for (long k : kept) {
      keptTotal += k;
    }
    return numOut > keptTotal;
  }

  /** A copy of the kept counts per expert. */
  public long[] keptPerExpert() {
    return kept.clone();
  }

  /** A copy of the dropped counts per expert (valid slots beyond capacity). */
  public long[] droppedPerExpert() {
    return dropped.clone();
  }

  /** A copy of the segment offsets, {@code E + 1} entries. */
  public long[] offsets() {
    return offsets.clone();
  }
}
