package io.moeprep.kernels;

import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.ContractChecks;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;

/**
 * The public entry point of the kernels: validates every input at the boundary (before any work,
 * with messages naming argument, constraint, value and position), then runs the operation on the
 * chosen backend. Thread-safe; holds no mutable workspace.
 *
 * <pre>{@code
 * MoeKernels k = MoeKernels.create(BackendChoice.AUTO);
 * try (PermuteResult r = k.permute(input, PermuteOptions.forRank(256, 8, 0))) { ... }
 * }</pre>
 */
public final class MoeKernels {
  private final KernelBackend backend;
  private final CpuPool checks;

  private MoeKernels(KernelBackend backend, CpuPool checks) {
    this.backend = backend;
    this.checks = checks;
  }

  /** Kernels on the backend {@code choice} selects (see {@link Backends#select}). */
  public static MoeKernels create(BackendChoice choice) {
    return on(Backends.select(choice));
  }

  /**
   * Kernels on a given backend; the checks of the inputs run on the backend's pool when it is the
   * CPU backend, else on {@link CpuPool#common()}.
   */
  public static MoeKernels on(KernelBackend backend) {
    return new MoeKernels(
        backend, backend instanceof CpuBackend cpu ? cpu.pool() : CpuPool.common());
  }

  /** The backend that runs the operations. */
  public KernelBackend backend() {
    return backend;
  }

  /** Permutes a batch (contract, Permute). The caller closes the result. */
  public PermuteResult permute(PermuteInput in, PermuteOptions options) {
    ContractChecks.checkPermute(in, options, checks);
    return backend.permute(in, options);
  }

  /** Combines expert outputs into {@code numTokens x hidden} rows. The caller closes them. */
  public HostBuffer unpermute(UnpermuteInput in) {
    ContractChecks.checkUnpermute(in, checks);
    return backend.unpermute(in);
  }

  /** Reorders chunks of rows. The caller closes the result. */
  public ChunkSortResult chunkSort(ChunkSortInput in) {
    ContractChecks.checkChunkSort(in);
    return backend.chunkSort(in);
  }
}
