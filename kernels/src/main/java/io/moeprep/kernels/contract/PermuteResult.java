package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * The outputs of one permute (contract, Permute step 3). Owns its buffers: close it.
 *
 * <ul>
 *   <li>{@code permuted}: {@code numOut x hidden} elements; row {@code i} is a copy of token {@code
 *       sourceToken[i]}, or zeros on padding rows.
 *   <li>{@code rowIdMap}: int32 {@code N x K}, token-major: the output row of slot {@code (t, k)},
 *       or {@code -1} (masked or dropped).
 *   <li>{@code sourceToken}, {@code sourceSlot}: int64 {@code numOut}, {@code -1} on padding rows.
 *   <li>{@code permutedProbs}: float32 {@code numOut} ({@code 0} on padding), or {@code null} when
 *       no probs were given.
 *   <li>{@code layout}: kept and dropped slots per global expert and the segment offsets.
 * </ul>
 */
public record PermuteResult(
    HostBuffer permuted,
    HostBuffer rowIdMap,
    HostBuffer sourceToken,
    HostBuffer sourceSlot,
    HostBuffer permutedProbs,
    SegmentLayout layout,
    DType dtype,
    int hidden)
    implements AutoCloseable {

  /** Output rows, padding included. */
  public long numOut() {
    return layout.numOut();
  }

  /** Kept rows per global expert ({@code 0} for experts of other ranks). */
  public long[] tokensPerExpert() {
    return layout.keptPerExpert();
  }

  @Override
  public void close() {
    try (HostBuffer a = permuted;
        HostBuffer b = rowIdMap;
        HostBuffer c = sourceToken;
        HostBuffer d = sourceSlot;
        HostBuffer e = permutedProbs) {
      // closed in reverse order by try-with-resources; null entries are skipped
    }
  }
}
