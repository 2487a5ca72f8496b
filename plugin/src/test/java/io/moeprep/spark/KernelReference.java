package io.moeprep.spark;

import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * The expected results of the Spark tests: {@link ReferenceBatch} (the kernels' CPU backend run
 * directly on one batch sorted by token id, shared with the job's verifier) over a {@link
 * TokenBatch}.
 */
public final class KernelReference {
  private KernelReference() {}

  /** Batch {@code b} of {@code tb} in host buffers, with its probs or without. */
  public static ReferenceBatch batch(TokenBatch tb, long b, boolean probs) {
    return ReferenceBatch.of(
        tb.batch(b).stream()
            .map(t -> new ReferenceBatch.Token(t.id(), t.hidden(), t.ids(), t.probs()))
            .toList(),
        tb.hidden,
        tb.dtype,
        tb.topK,
        probs);
  }

  /** The expected permute of {@code b} with {@code o}. */
  public static PermuteResult permute(ReferenceBatch b, PermuteOptions o) {
    return b.permute(o);
  }

  /** Bytes of row {@code i} of a buffer of rows of {@code rowBytes}. */
  public static byte[] row(HostBuffer buf, long i, long rowBytes) {
    return ReferenceBatch.row(buf, i, rowBytes);
  }
}
