package io.moeprep.kernels.contract;

/**
 * What permute does with a routing map: the expert count, the rank it masks to (if any), the
 * capacity policy and the alignment padding.
 *
 * @param numExperts {@code E}, global expert count, {@code >= 1}
 * @param placement expert-to-rank table, or {@code null} for one rank owning every expert
 * @param rank the rank to mask to ({@code [0, R)}), or {@code -1} for no masking
 * @param capacity the capacity policy, never {@code null}
 * @param align pad each expert segment with zero rows to a multiple of this ({@code >= 1}; 1 = no
 *     padding); cannot be combined with {@link CapacityPolicy.NumOut}
 */
public record PermuteOptions(
    int numExperts, ExpertPlacement placement, int rank, CapacityPolicy capacity, int align) {

  public PermuteOptions {
    if (numExperts < 1) {
      throw new IllegalArgumentException(
          "numExperts = " + numExperts + " is invalid: must be >= 1");
    }
    if (capacity == null) {
      throw new IllegalArgumentException("capacity is null: use CapacityPolicy.none()");
    }
    if (align < 1) {
      throw new IllegalArgumentException("align = " + align + " is invalid: must be >= 1");
    }
    if (align > 1 && capacity instanceof CapacityPolicy.NumOut) {
      throw new IllegalArgumentException(
          "align = " + align + " cannot be combined with numOut: choose one of them");
    }
    if (placement != null && placement.numExperts() != numExperts) {
      throw new IllegalArgumentException(
          "placement has "
              + placement.numExperts()
              + " experts but numExperts = "
              + numExperts
              + ": they must be equal");
    }
    if (rank != -1) {
      if (placement == null) {
        throw new IllegalArgumentException(
            "rank = " + rank + " needs a placement (epSize or an expert-to-rank table)");
      }
      if (rank < 0 || rank >= placement.numRanks()) {
        throw new IllegalArgumentException(
            "rank = " + rank + " is out of range [0, " + placement.numRanks() + ")");
      }
    }
  }

  /** All experts local, no capacity, no padding. */
  public static PermuteOptions of(int numExperts) {
    return new PermuteOptions(numExperts, null, -1, CapacityPolicy.NONE, 1);
  }

  /** Masked to rank {@code rank} of a contiguous placement over {@code epSize} ranks. */
  public static PermuteOptions forRank(int numExperts, int epSize, int rank) {
    return new PermuteOptions(
        numExperts, ExpertPlacement.contiguous(numExperts, epSize), rank, CapacityPolicy.NONE, 1);
  }

  /** A copy with another capacity policy. */
  public PermuteOptions withCapacity(CapacityPolicy c) {
    return new PermuteOptions(numExperts, placement, rank, c, align);
  }

  /** A copy with another alignment. */
  public PermuteOptions withAlign(int a) {
    return new PermuteOptions(numExperts, placement, rank, capacity, a);
  }

  /** {@code true} for every expert this permute keeps slots of (all, or those of {@code rank}). */
  public boolean[] localExperts() {
    if (rank < 0) {
      boolean[] all = new boolean[numExperts];
      java.util.Arrays.fill(all, true);
      return all;
    }
    return placement.ownedBy(rank);
  }
}
