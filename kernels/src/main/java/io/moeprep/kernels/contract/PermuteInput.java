package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * One batch to permute. The buffers stay owned by the caller.
 *
 * @param tokens {@code numTokens x hidden} elements of {@code dtype}, row-major
 * @param numTokens {@code N >= 0}
 * @param hidden {@code H >= 1}, elements per token
 * @param dtype element type
 * @param routing {@code N x topK} int32 expert ids or {@code -1}, token-major
 * @param topK {@code K >= 1}
 * @param probs {@code N x topK} float32 aligned with routing, or {@code null}
 */
public record PermuteInput(
    HostBuffer tokens,
    long numTokens,
    int hidden,
    DType dtype,
    HostBuffer routing,
    int topK,
    HostBuffer probs) {

  /** Bytes of one token row. */
  public long rowBytes() {
    return dtype.rowBytes(hidden);
  }

  /** {@code N * K}, the slot count. */
  public long numSlots() {
    return numTokens * topK;
  }
}
