package io.moeprep.app.job;

import io.moeprep.kernels.contract.ExpertPlacement;
import java.util.Map;
import java.util.TreeMap;

/**
 * Expert load of one permute: kept and dropped slots per expert, per rank and per batch, and the
 * imbalance measures (max / mean) over experts and over ranks.
 */
final class ExpertLoad {
  final ExpertPlacement placement;
  final long[] kept;
  final long[] dropped;

  /** Per batch: kept slots per expert. */
  final Map<Long, long[]> keptByBatch = new TreeMap<>();

  /** Per batch: dropped slots per expert. */
  final Map<Long, long[]> droppedByBatch = new TreeMap<>();

  ExpertLoad(ExpertPlacement placement) {
    this.placement = placement;
    this.kept = new long[placement.numExperts()];
    this.dropped = new long[placement.numExperts()];
  }

  /** Adds one (batch, expert) count. */
  void add(long batch, int expert, long k, long d) {
    kept[expert] += k;
    dropped[expert] += d;
    keptByBatch.computeIfAbsent(batch, b -> new long[kept.length])[expert] += k;
    droppedByBatch.computeIfAbsent(batch, b -> new long[kept.length])[expert] += d;
  }

  int numRanks() {
    return placement.numRanks();
  }

  /** Sums per-expert counts per rank. */
  long[] perRank(long[] perExpert) {
    long[] r = new long[placement.numRanks()];
    for (int e = 0; e < perExpert.length; e++) {
      r[placement.rankOf(e)] += perExpert[e];
    }
    return r;
  }

  /** {@code max / mean} of the values; 0 when all are 0 (no load: no imbalance to measure). */
  static double imbalance(long[] v) {
    long max = 0;
    long sum = 0;
    for (long x : v) {
      max = Math.max(max, x);
      sum += x;
    }
    return sum == 0 ? 0 : max / ((double) sum / v.length);
  }

  /** {@code dropped / (kept + dropped)}, 0 without slots. */
  static double dropRate(long kept, long dropped) {
    return kept + dropped == 0 ? 0 : (double) dropped / (kept + dropped);
  }

  /** Element-wise {@code a + b}. */
  static long[] add(long[] a, long[] b) {
    long[] s = new long[a.length];
    for (int i = 0; i < a.length; i++) {
      s[i] = a[i] + b[i];
    }
    return s;
  }

  static long sum(long[] v) {
    long s = 0;
    for (long x : v) {
      s += x;
    }
    return s;
  }
}
