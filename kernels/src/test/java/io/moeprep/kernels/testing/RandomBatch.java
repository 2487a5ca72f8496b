package io.moeprep.kernels.testing;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.workload.SyntheticRouting;
import java.util.SplittableRandom;

/**
 * A random batch for tests: tokens, routing with a given density of {@code -1} entries and no
 * expert repeated within a token (as a router's top-k), and probs. Owns its buffers.
 */
public final class RandomBatch implements AutoCloseable {
  public final long numTokens;
  public final int hidden;
  public final int topK;
  public final int numExperts;
  public final DType dtype;
  public final HostBuffer tokens;
  public final HostBuffer routing;
  public final HostBuffer probs;

  private RandomBatch(
      long n, int h, int k, int e, DType dtype, HostBuffer t, HostBuffer r, HostBuffer p) {
    this.numTokens = n;
    this.hidden = h;
    this.topK = k;
    this.numExperts = e;
    this.dtype = dtype;
    this.tokens = t;
    this.routing = r;
    this.probs = p;
  }

  /**
   * A batch of random bytes (every bit pattern, NaNs included) with routing where each slot is
   * {@code -1} with probability {@code minusOneDensity}; experts repeat within a token only when
   * {@code k > e}.
   */
  public static RandomBatch create(
      SplittableRandom rnd, long n, int h, int k, int e, DType dtype, double minusOneDensity) {
    HostBuffer t = HostBuffer.allocate(n * h * dtype.bytes());
    HostBuffer r = HostBuffer.allocate(n * k * 4);
    HostBuffer p = HostBuffer.allocate(n * k * 4);
    fillRandom(rnd, t);
    SyntheticRouting.fill(rnd, r, p, n, k, e, minusOneDensity);
    return new RandomBatch(n, h, k, e, dtype, t, r, p);
  }

  /** Fills a buffer with random bytes. */
  public static void fillRandom(SplittableRandom rnd, HostBuffer b) {
    long i = 0;
    for (; i + 8 <= b.size(); i += 8) {
      b.putLong(i, rnd.nextLong());
    }
    for (; i < b.size(); i++) {
      b.putByte(i, (byte) rnd.nextInt());
    }
  }

  /** The permute input over these buffers, with or without probs. */
  public PermuteInput input(boolean withProbs) {
    return new PermuteInput(
        tokens, numTokens, hidden, dtype, routing, topK, withProbs ? probs : null);
  }

  @Override
  public void close() {
    try (HostBuffer a = tokens;
        HostBuffer b = routing;
        HostBuffer c = probs) {
      // all closed
    }
  }
}
