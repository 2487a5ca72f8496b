package io.moeprep.kernels.contract;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * Rows split into consecutive chunks of {@code splitSizes} rows, to be emitted in the chunk order
 * {@code sortedIndex}: the output is chunk {@code sortedIndex[0]}, then chunk {@code
 * sortedIndex[1]}, and so on. Used to regroup {@code [rank][expert]} into {@code [expert][rank]}
 * after an all-to-all. The buffers stay owned by the caller.
 *
 * @param rows {@code numRows x hidden} elements of {@code dtype}
 * @param numRows total rows, equal to the sum of {@code splitSizes}
 * @param hidden {@code H >= 1}
 * @param dtype element type (moved as bytes)
 * @param splitSizes rows per chunk, each {@code >= 0}
 * @param sortedIndex a permutation of {@code [0, splitSizes.length)}
 * @param probs float32 {@code numRows}, moved alongside, or {@code null}
 */
public record ChunkSortInput(
    HostBuffer rows,
    long numRows,
    int hidden,
    DType dtype,
    long[] splitSizes,
    int[] sortedIndex,
    HostBuffer probs) {

  /** Bytes of one row. */
  public long rowBytes() {
    return dtype.rowBytes(hidden);
  }

  /** First source row of each chunk, {@code chunks + 1} entries. */
  public long[] sourceOffsets() {
    long[] off = new long[splitSizes.length + 1];
    for (int i = 0; i < splitSizes.length; i++) {
      off[i + 1] = off[i] + splitSizes[i];
    }
    return off;
  }
}
