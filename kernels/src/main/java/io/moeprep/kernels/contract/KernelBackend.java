package io.moeprep.kernels.contract;

import io.moeprep.kernels.memory.HostBuffer;

/**
 * One implementation of the contract's operations on host-resident batches. Inputs reach a backend
 * only through {@link io.moeprep.kernels.MoeKernels}, which has validated them; a backend does not
 * check them again. Every backend returns identical bytes.
 */
public interface KernelBackend {

  /** A short name: {@code cpu} or {@code cuda}. */
  String name();

  /** Permutes one validated batch. */
  PermuteResult permute(PermuteInput in, PermuteOptions options);

  /** Combines expert outputs back to {@code numTokens x hidden} rows; the caller closes them. */
  HostBuffer unpermute(UnpermuteInput in);

  /** Reorders chunks of rows. */
  ChunkSortResult chunkSort(ChunkSortInput in);
}
