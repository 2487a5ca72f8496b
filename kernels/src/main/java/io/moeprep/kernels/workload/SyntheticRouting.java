package io.moeprep.kernels.workload;

import io.moeprep.kernels.memory.HostBuffer;
import java.util.SplittableRandom;

/**
 * Random router decisions for tests and benchmarks: each token's K slots name distinct experts
 * (uniform, as a top-k; repeats only when {@code K > E}), each slot is {@code -1} with probability
 * {@code minusOneDensity}, and probs are uniform in [0, 1).
 */
public final class SyntheticRouting {
  private SyntheticRouting() {}

  /**
   * Fills {@code routing} (int32 {@code n x k}) and, when not null, {@code probs} (float32 {@code n
   * x k}).
   */
  public static void fill(
      SplittableRandom rnd,
      HostBuffer routing,
      HostBuffer probs,
      long n,
      int k,
      int numExperts,
      double minusOneDensity) {
    int[] perm = new int[numExperts];
    int[] ids = new int[k];
    float[] p = new float[k];
    for (long t = 0; t < n; t++) {
      pickToken(rnd, perm, ids, p, numExperts, minusOneDensity);
      for (int j = 0; j < k; j++) {
        routing.putInt(4 * (t * k + j), ids[j]);
        if (probs != null) {
          probs.putFloat(4 * (t * k + j), p[j]);
        }
      }
    }
  }

  /**
   * One token's decisions: {@code ids.length} distinct experts of {@code numExperts} (repeats only
   * when there are more slots than experts), each {@code -1} with probability {@code
   * minusOneDensity}, and probs uniform in [0, 1). {@code perm} is scratch of {@code numExperts}
   * entries.
   */
  public static void pickToken(
      SplittableRandom rnd,
      int[] perm,
      int[] ids,
      float[] probs,
      int numExperts,
      double minusOneDensity) {
    for (int i = 0; i < numExperts; i++) {
      perm[i] = i;
    }
    for (int j = 0; j < ids.length; j++) {
      int id;
      if (j < numExperts) {
        int pick = j + rnd.nextInt(numExperts - j);
        id = perm[pick];
        perm[pick] = perm[j];
        perm[j] = id;
      } else {
        id = rnd.nextInt(numExperts);
      }
      if (minusOneDensity > 0 && rnd.nextDouble() < minusOneDensity) {
        id = -1;
      }
      ids[j] = id;
      probs[j] = (float) rnd.nextDouble();
    }
  }
}
