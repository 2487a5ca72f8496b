package io.moeprep.kernels.testing;

import java.util.SplittableRandom;

/**
 * Fresh random seeds per run, printed so that a failure can be replayed with {@code
 * -Dmoeprep.seed=N}.
 */
public final class Seeds {
  private Seeds() {}

  /** A new generator; its seed is printed with {@code label}. */
  public static SplittableRandom fresh(String label) {
    Long fixed = Long.getLong("moeprep.seed");
    long seed = fixed != null ? fixed : System.nanoTime() ^ Thread.currentThread().getId() << 32;
    System.out.println(
        "seed for " + label + ": " + seed + " (replay with -Dmoeprep.seed=" + seed + ")");
    return new SplittableRandom(seed);
  }
}
