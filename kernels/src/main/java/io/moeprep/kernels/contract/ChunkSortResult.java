package io.moeprep.kernels.contract;

import io.moeprep.kernels.memory.HostBuffer;

/**
 * Output of a chunk sort: the rows in the new order and their probs ({@code null} when none were
 * given). Owns its buffers.
 */
public record ChunkSortResult(HostBuffer rows, HostBuffer probs) implements AutoCloseable {
  @Override
  public void close() {
    try (HostBuffer a = rows;
        HostBuffer b = probs) {
      // both closed; null is skipped
    }
  }
}
