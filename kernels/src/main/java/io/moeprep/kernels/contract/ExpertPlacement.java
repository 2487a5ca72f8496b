package io.moeprep.kernels.contract;

import java.util.Arrays;

/**
 * Which expert-parallel rank owns each of the {@code E} global experts.
 *
 * <p>{@link #contiguous(int, int)} is the default: rank {@code r} owns experts {@code [r*E/R,
 * (r+1)*E/R)}. {@link #explicit(int[], int)} takes any expert-to-rank table.
 */
public final class ExpertPlacement {
  private final int[] rankOfExpert;
  private final int numRanks;

  private ExpertPlacement(int[] rankOfExpert, int numRanks) {
    this.rankOfExpert = rankOfExpert;
    this.numRanks = numRanks;
  }

  /**
   * Rank {@code r} owns experts {@code [r*E/R, (r+1)*E/R)}.
   *
   * @throws IllegalArgumentException when {@code E < 1}, {@code R < 1} or {@code E % R != 0}
   */
  public static ExpertPlacement contiguous(int numExperts, int numRanks) {
    if (numExperts < 1) {
      throw new IllegalArgumentException(
          "numExperts = " + numExperts + " is invalid: must be >= 1");
    }
    if (numRanks < 1) {
      throw new IllegalArgumentException("epSize = " + numRanks + " is invalid: must be >= 1");
    }
    if (numExperts % numRanks != 0) {
      throw new IllegalArgumentException(
          "numExperts = "
              + numExperts
              + " is not a multiple of epSize = "
              + numRanks
              + ": give an explicit expert-to-rank placement");
    }
    int per = numExperts / numRanks;
    int[] table = new int[numExperts];
    for (int e = 0; e < numExperts; e++) {
      table[e] = e / per;
    }
    return new ExpertPlacement(table, numRanks);
  }

  /**
   * An explicit table: {@code rankOfExpert[e]} is the rank that owns expert {@code e}.
   *
   * @throws IllegalArgumentException when an entry is outside {@code [0, numRanks)}
   */
  public static ExpertPlacement explicit(int[] rankOfExpert, int numRanks) {
    if (numRanks < 1) {
      throw new IllegalArgumentException("epSize = " + numRanks + " is invalid: must be >= 1");
    }
    if (rankOfExpert.length < 1) {
      throw new IllegalArgumentException("placement is empty: it needs one rank per expert");
    }
    for (int e = 0; e < rankOfExpert.length; e++) {
      if (rankOfExpert[e] < 0 || rankOfExpert[e] >= numRanks) {
        throw new IllegalArgumentException(
            "placement[expert="
                + e
                + "] = "
                + rankOfExpert[e]
                + " is out of range [0, "
                + numRanks
                + ")");
      }
    }
    return new ExpertPlacement(rankOfExpert.clone(), numRanks);
  }

  /** Number of global experts. */
  public int numExperts() {
    return rankOfExpert.length;
  }

  /** Number of ranks. */
  public int numRanks() {
    return numRanks;
  }

  /** The rank owning expert {@code e}. */
  public int rankOf(int expert) {
    return rankOfExpert[expert];
  }

  /** A fresh array: {@code true} for each expert owned by {@code rank}. */
  public boolean[] ownedBy(int rank) {
    boolean[] owned = new boolean[rankOfExpert.length];
    for (int e = 0; e < owned.length; e++) {
      owned[e] = rankOfExpert[e] == rank;
    }
    return owned;
  }

  /** The global expert ids owned by {@code rank}, ascending. */
  public int[] expertsOf(int rank) {
    return java.util.stream.IntStream.range(0, rankOfExpert.length)
        .filter(e -> rankOfExpert[e] == rank)
        .toArray();
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof ExpertPlacement p
        && p.numRanks == numRanks
        && Arrays.equals(p.rankOfExpert, rankOfExpert);
  }

  @Override
  public int hashCode() {
    return 31 * numRanks + Arrays.hashCode(rankOfExpert);
  }

  @Override
  public String toString() {
    return "ExpertPlacement[E=" + rankOfExpert.length + ", R=" + numRanks + "]";
  }
}
