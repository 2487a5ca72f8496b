package io.moeprep.spark.exec;

import org.apache.spark.unsafe.hash.Murmur3_x86_32;

/**
 * Keys that make Spark's hash partitioning a pass-through: {@code repartition(R, pkey)} sends a row
 * to partition {@code pmod(murmur3(pkey, 42), R)}, so choosing for rank {@code r} a key hashing to
 * {@code r} puts rank {@code r} in partition {@code r}, using Spark SQL's own shuffle.
 */
public final class RankPartitioning {
  private RankPartitioning() {}

  /** The seed of Spark SQL's {@code HashPartitioning}. */
  private static final int SEED = 42;

  /** The partition Spark SQL's hash partitioning gives an int key among {@code n}. */
  public static int partitionOf(int key, int n) {
    int h = Murmur3_x86_32.hashInt(key, SEED);
    return Math.floorMod(h, n);
  }

  /** For each rank of {@code [0, n)}, the smallest non-negative key landing in its partition. */
  public static int[] keys(int n) {
    int[] keys = new int[n];
    java.util.Arrays.fill(keys, -1);
    int found = 0;
    for (int k = 0; found < n; k++) {
      int p = partitionOf(k, n);
      if (keys[p] < 0) {
        keys[p] = k;
        found++;
      }
    }
    return keys;
  }
}
