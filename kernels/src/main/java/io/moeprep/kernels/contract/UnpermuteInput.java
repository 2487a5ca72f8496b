package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * One combine (unpermute). The buffers stay owned by the caller.
 *
 * @param expertOut {@code numOut x hidden} elements of {@code dtype}
 * @param numOut rows of {@code expertOut}
 * @param rowIdMap int32 {@code numTokens x topK}: the row of each slot, or {@code -1}
 * @param numTokens {@code N >= 0}
 * @param topK {@code K >= 1}
 * @param hidden {@code H >= 1}
 * @param dtype element type (not FP8)
 * @param probs float32 {@code numTokens x topK}, or {@code null} for weight 1
 */
public record UnpermuteInput(
    HostBuffer expertOut,
    long numOut,
    HostBuffer rowIdMap,
    long numTokens,
    int topK,
    int hidden,
    DType dtype,
    HostBuffer probs) {

  /** Bytes of one row. */
  public long rowBytes() {
    return dtype.rowBytes(hidden);
  }
}
