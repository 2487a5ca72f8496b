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

  /** The ordinal of the GPU this backend runs on, or {@code -1} for a backend without one. */
  default int deviceOrdinal() {
    return -1;
  }

  /** Permutes one validated batch. */
  PermuteResult permute(PermuteInput in, PermuteOptions options);

  /** Combines expert outputs back to {@code numTokens x hidden} rows; the caller closes them. */
  HostBuffer unpermute(UnpermuteInput in);

  /** Reorders chunks of rows. */
  ChunkSortResult chunkSort(ChunkSortInput in);

  /**
   * Caps the device memory that this backend's operations hold at once on its device, all callers
   * together ({@code 0}: no cap but the device's); an allocation past it fails as one the device
   * refuses. A backend without a device ignores it.
   *
   * @param bytes the cap in bytes, {@code >= 0}
   */
  default void limitDeviceMemory(long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("memory limit = " + bytes + " is invalid: must be >= 0");
    }
  }
}
