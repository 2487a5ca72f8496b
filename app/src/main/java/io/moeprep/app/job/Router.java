package io.moeprep.app.job;

import java.io.Serializable;
import java.util.SplittableRandom;

/**
 * A synthetic MoE router, the rule real models use: router logits {@code z = x W + b} from a token
 * feature vector {@code x} ({@link #FEATURES} elements) and a random weight matrix {@code W}
 * ({@code FEATURES x E}, entries {@code N(0, 1/FEATURES)}), scores {@code s = softmax(z)} or {@code
 * sigmoid(z)}, then top-k; optionally group-limited top-k as in DeepSeek-V3: the E experts form
 * {@code groups} equal groups, a group's score is the sum of its two best scores (its best one for
 * groups of one expert), only the {@code topkGroups} best groups stay eligible and the top-k is
 * taken among their experts. The chosen experts are listed by descending score (ties: the lower
 * expert id first); their weights are the scores, divided by their sum when {@code normalize}.
 *
 * <p>Skew: the bias {@code b[e] = -skew * ln(1 + popularity rank of e)} (a seeded permutation of
 * the experts) makes expert load Zipf-like with exponent {@code skew}; 0 gives a balanced router.
 * Everything is a pure function of the seed and {@code x}, with {@link StrictMath}, so the same on
 * every machine.
 */
public final class Router implements Serializable {
  private static final long serialVersionUID = 1L;

  /** Elements of the router's input feature vector. */
  public static final int FEATURES = 32;

  /** How logits become scores. */
  public enum Scoring {
    /** {@code softmax(z)} over all E experts (Mixtral, Qwen-MoE, DeepSeek-V2). */
    SOFTMAX,
    /** {@code sigmoid(z)} per expert (DeepSeek-V3). */
    SIGMOID
  }

  private final int numExperts;
  private final int topK;
  private final Scoring scoring;
  private final int groups;
  private final int topkGroups;
  private final boolean normalize;
  private final float[] weights; // FEATURES x E, row-major
  private final double[] bias;

  /**
   * @param groups expert groups ({@code 1} = plain top-k); must divide {@code numExperts}
   * @param topkGroups groups kept per token, in {@code [1, groups]}, with {@code topkGroups *
   *     E/groups >= topK}
   * @throws IllegalArgumentException naming the option ({@code --experts, --top-k, --groups,
   *     --topk-groups, --skew}) when the rule is impossible
   */
  public Router(
      int numExperts,
      int topK,
      Scoring scoring,
      int groups,
      int topkGroups,
      double skew,
      boolean normalize,
      long seed) {
    if (numExperts < 1) {
      throw new IllegalArgumentException("--experts " + numExperts + " is invalid: must be >= 1");
    }
    if (topK < 1 || topK > numExperts) {
      throw new IllegalArgumentException(
          "--top-k " + topK + " is invalid: must be in [1, --experts = " + numExperts + "]");
    }
    if (groups < 1 || numExperts % groups != 0) {
      throw new IllegalArgumentException(
          "--groups " + groups + " is invalid: must divide --experts = " + numExperts);
    }
    if (topkGroups < 1 || topkGroups > groups) {
      throw new IllegalArgumentException(
          "--topk-groups " + topkGroups + " is invalid: must be in [1, --groups = " + groups + "]");
    }
    if ((long) topkGroups * (numExperts / groups) < topK) {
      throw new IllegalArgumentException(
          "--topk-groups "
              + topkGroups
              + " keeps "
              + topkGroups * (numExperts / groups)
              + " experts, fewer than --top-k = "
              + topK
              + ": raise --topk-groups or lower --top-k");
    }
    if (!(skew >= 0) || Double.isInfinite(skew)) {
      throw new IllegalArgumentException("--skew " + skew + " is invalid: must be >= 0");
    }
    this.numExperts = numExperts;
    this.topK = topK;
    this.scoring = scoring;
    this.groups = groups;
    this.topkGroups = topkGroups;
    this.normalize = normalize;
    SplittableRandom rnd = new SplittableRandom(seed ^ 0x5DEECE66DL);
    weights = new float[FEATURES * numExperts];
    double scale = 1.0 / Math.sqrt(FEATURES);
    for (int i = 0; i < weights.length; i++) {
      weights[i] = (float) (TokenGenerator.gaussian(rnd) * scale);
    }
    int[] popularity = new int[numExperts];
    for (int e = 0; e < numExperts; e++) {
      popularity[e] = e;
    }
    for (int e = numExperts - 1; e > 0; e--) {
      int j = rnd.nextInt(e + 1);
      int x = popularity[e];
      popularity[e] = popularity[j];
      popularity[j] = x;
    }
    bias = new double[numExperts];
    for (int r = 0; r < numExperts; r++) {
      bias[popularity[r]] = -skew * StrictMath.log(1 + r);
    }
  }

  public int numExperts() {
    return numExperts;
  }

  public int topK() {
    return topK;
  }

  public int groups() {
    return groups;
  }

  public int topkGroups() {
    return topkGroups;
  }

  /** The scores {@code s} of all E experts for features {@code x} ({@link #FEATURES} values). */
  public double[] scores(float[] x) {
    double[] z = new double[numExperts];
    for (int e = 0; e < numExperts; e++) {
      double acc = bias[e];
      for (int j = 0; j < FEATURES; j++) {
        acc += (double) x[j] * weights[j * numExperts + e];
      }
      z[e] = acc;
    }
    if (scoring == Scoring.SIGMOID) {
      for (int e = 0; e < numExperts; e++) {
        z[e] = 1.0 / (1.0 + StrictMath.exp(-z[e]));
      }
      return z;
    }
    double max = Double.NEGATIVE_INFINITY;
    for (double v : z) {
      max = Math.max(max, v);
    }
    double sum = 0;
    for (int e = 0; e < numExperts; e++) {
      z[e] = StrictMath.exp(z[e] - max);
      sum += z[e];
    }
    for (int e = 0; e < numExperts; e++) {
      z[e] /= sum;
    }
    return z;
  }

  /**
   * The groups eligible for a token with scores {@code s}: {@code eligible[g]} is true for the
   * {@code topkGroups} groups with the largest sum of their two best scores.
   */
  public boolean[] eligibleGroups(double[] s) {
    boolean[] eligible = new boolean[groups];
    if (groups == 1) {
      eligible[0] = true;
      return eligible;
    }
    int per = numExperts / groups;
    double[] gs = new double[groups];
    for (int g = 0; g < groups; g++) {
      double best = Double.NEGATIVE_INFINITY;
      double second = Double.NEGATIVE_INFINITY;
      for (int e = g * per; e < (g + 1) * per; e++) {
        if (s[e] > best) {
          second = best;
          best = s[e];
        } else if (s[e] > second) {
          second = s[e];
        }
      }
      gs[g] = per == 1 ? best : best + second;
    }
    for (int pick = 0; pick < topkGroups; pick++) {
      int arg = -1;
      for (int g = 0; g < groups; g++) {
        if (!eligible[g] && (arg < 0 || gs[g] > gs[arg])) {
          arg = g;
        }
      }
      eligible[arg] = true;
    }
    return eligible;
  }

  /**
   * Routes one token: writes its {@code K} expert ids (descending score) and weights.
   *
   * @param x {@link #FEATURES} feature values
   */
  public void route(float[] x, int[] ids, float[] probs) {
    double[] s = scores(x);
    boolean[] eligible = eligibleGroups(s);
    int per = numExperts / groups;
    boolean[] taken = new boolean[numExperts];
    double sum = 0;
    double[] w = new double[topK];
    for (int k = 0; k < topK; k++) {
      int arg = -1;
      for (int e = 0; e < numExperts; e++) {
        if (!taken[e] && eligible[e / per] && (arg < 0 || s[e] > s[arg])) {
          arg = e;
        }
      }
      taken[arg] = true;
      ids[k] = arg;
      w[k] = s[arg];
      sum += s[arg];
    }
    for (int k = 0; k < topK; k++) {
      probs[k] = (float) (normalize && sum > 0 ? w[k] / sum : w[k]);
    }
  }
}
