package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The routing rule of generate: top-k, group-limited top-k, probs, skew, determinism. */
class RouterTest {
  private static float[] features(SplittableRandom rnd) {
    float[] x = new float[Router.FEATURES];
    for (int i = 0; i < x.length; i++) {
      x[i] = (float) rnd.nextGaussian();
    }
    return x;
  }

  @ParameterizedTest(name = "E={0} K={1} {2} groups={3}/{4} skew={5}")
  @CsvSource({
    "16, 4, SOFTMAX, 1, 1, 0.0",
    "16, 4, SIGMOID, 4, 2, 1.0",
    "64, 8, SIGMOID, 8, 4, 1.5",
    "8, 8, SOFTMAX, 1, 1, 0.5",
    "5, 1, SOFTMAX, 5, 1, 0.0",
    "256, 8, SIGMOID, 8, 4, 1.0"
  })
  void topKPicksTheBestEligibleExpertsWithNormalisedProbs(
      int e, int k, Router.Scoring scoring, int groups, int topkGroups, double skew) {
    Router r = new Router(e, k, scoring, groups, topkGroups, skew, true, 11);
    SplittableRandom rnd = new SplittableRandom(5);
    int per = e / groups;
    for (int t = 0; t < 500; t++) {
      float[] x = features(rnd);
      int[] ids = new int[k];
      float[] p = new float[k];
      r.route(x, ids, p);
      double[] s = r.scores(x);
      boolean[] eligible = r.eligibleGroups(s);
      // the eligible groups are the topkGroups best by the sum of their two best scores
      double[] gs = new double[groups];
      for (int g = 0; g < groups; g++) {
        double[] mine = java.util.Arrays.copyOfRange(s, g * per, (g + 1) * per);
        java.util.Arrays.sort(mine);
        gs[g] = mine[per - 1] + (per > 1 ? mine[per - 2] : 0);
      }
      int eligibleCount = 0;
      double worstEligible = Double.MAX_VALUE;
      double bestOther = -Double.MAX_VALUE;
      for (int g = 0; g < groups; g++) {
        if (eligible[g]) {
          eligibleCount++;
          worstEligible = Math.min(worstEligible, gs[g]);
        } else {
          bestOther = Math.max(bestOther, gs[g]);
        }
      }
      assertEquals(topkGroups, eligibleCount);
      assertTrue(worstEligible >= bestOther, "a better group was left out");
      double sum = 0;
      boolean[] seen = new boolean[e];
      for (int j = 0; j < k; j++) {
        assertTrue(ids[j] >= 0 && ids[j] < e);
        assertTrue(!seen[ids[j]], "expert " + ids[j] + " chosen twice");
        seen[ids[j]] = true;
        assertTrue(eligible[ids[j] / per], "expert " + ids[j] + " of a group not chosen");
        if (j > 0) {
          assertTrue(s[ids[j - 1]] >= s[ids[j]], "not by descending score");
        }
        sum += p[j];
      }
      // no eligible expert left out scores higher than the last one chosen
      for (int x2 = 0; x2 < e; x2++) {
        if (!seen[x2] && eligible[x2 / per]) {
          assertTrue(s[x2] <= s[ids[k - 1]], "expert " + x2 + " beats a chosen one");
        }
      }
      assertEquals(1.0, sum, 1e-5);
    }
  }

  @Test
  void withoutNormalisationProbsAreTheScores() {
    Router r = new Router(16, 2, Router.Scoring.SOFTMAX, 1, 1, 0, false, 3);
    float[] x = features(new SplittableRandom(1));
    int[] ids = new int[2];
    float[] p = new float[2];
    r.route(x, ids, p);
    double[] s = r.scores(x);
    assertEquals((float) s[ids[0]], p[0]);
    assertEquals((float) s[ids[1]], p[1]);
    double total = 0;
    for (double v : s) {
      total += v;
    }
    assertEquals(1.0, total, 1e-9, "softmax scores sum to 1 over all experts");
  }

  @Test
  void skewMakesLoadUneven() {
    double balanced = imbalance(new Router(32, 4, Router.Scoring.SOFTMAX, 1, 1, 0, true, 9));
    double skewed = imbalance(new Router(32, 4, Router.Scoring.SOFTMAX, 1, 1, 1.2, true, 9));
    assertTrue(balanced < 1.5, "balanced router imbalance " + balanced);
    assertTrue(skewed > 2.0, "skewed router imbalance " + skewed);
  }

  private static double imbalance(Router r) {
    long[] load = new long[r.numExperts()];
    SplittableRandom rnd = new SplittableRandom(2);
    int[] ids = new int[r.topK()];
    float[] p = new float[r.topK()];
    for (int t = 0; t < 20000; t++) {
      r.route(features(rnd), ids, p);
      for (int id : ids) {
        load[id]++;
      }
    }
    return ExpertLoad.imbalance(load);
  }

  @Test
  void theSeedDecidesEverything() {
    float[] x = features(new SplittableRandom(4));
    Router a = new Router(64, 6, Router.Scoring.SIGMOID, 8, 3, 1.0, true, 77);
    Router b = new Router(64, 6, Router.Scoring.SIGMOID, 8, 3, 1.0, true, 77);
    Router c = new Router(64, 6, Router.Scoring.SIGMOID, 8, 3, 1.0, true, 78);
    assertArrayEquals(a.scores(x), b.scores(x));
    assertNotEquals(a.scores(x)[0], c.scores(x)[0]);
  }

  @Test
  void impossibleRulesNameTheOption() {
    assertTrue(
        assertThrows(
                IllegalArgumentException.class,
                () -> new Router(16, 4, Router.Scoring.SOFTMAX, 3, 1, 0, true, 1))
            .getMessage()
            .startsWith("--groups 3"));
    assertTrue(
        assertThrows(
                IllegalArgumentException.class,
                () -> new Router(16, 8, Router.Scoring.SOFTMAX, 4, 1, 0, true, 1))
            .getMessage()
            .contains("raise --topk-groups"));
    assertTrue(
        assertThrows(
                IllegalArgumentException.class,
                () -> new Router(4, 5, Router.Scoring.SOFTMAX, 1, 1, 0, true, 1))
            .getMessage()
            .startsWith("--top-k 5"));
  }
}
