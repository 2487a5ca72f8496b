package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.ContractChecks;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.cpu.CpuPool;
import io.moeprep.kernels.memory.HostBuffer;
import jcuda.driver.CUstream;

/**
 * The public, validated entry to the kernels for data already on the GPU (a cudf integration passes
 * the device addresses of its columns): the device-level twin of {@link
 * io.moeprep.kernels.MoeKernels}. Every call checks its input at the boundary with the contract's
 * checks ({@link ContractChecks}) on what can be checked from device addresses and shapes: the
 * shapes, the addresses (non-null where data is needed, aligned for the element type), and every
 * routing entry and row id, read back to the host (4 bytes a slot; never the hidden rows). Then it
 * runs the launchers of {@link DeviceKernels}: the maps by {@link RoutingMapLauncher#map} (the
 * fused single-launch kernel where it applies). Work is queued on {@code stream} ({@code null}: the
 * calling thread's per-thread default stream, cudf's under RAPIDS).
 */
public final class DeviceMoeKernels {
  private final DeviceKernels kernels;
  private final CpuPool checks;

  private DeviceMoeKernels(DeviceKernels kernels) {
    this.kernels = kernels;
    this.checks = CpuPool.common();
  }

  /** The kernels on {@code device} with {@code tuning}. */
  public static DeviceMoeKernels on(CudaDevice device, KernelTuning tuning) {
    return new DeviceMoeKernels(DeviceKernels.on(device, tuning));
  }

  /** The kernels on GPU {@code ordinal} with {@code tuning}. */
  public static DeviceMoeKernels on(int ordinal, KernelTuning tuning) {
    return on(CudaDevice.get(ordinal), tuning);
  }

  /** The device the addresses live on. */
  public CudaDevice device() {
    return kernels.device();
  }

  /** Copies between host and device addresses on {@link #device()} (unchecked). */
  public DeviceCopies copies() {
    return kernels.copies();
  }

  /**
   * Step 1 of a permute, validated: checks the routing (shape, addresses, every expert id {@code
   * -1} or in {@code [0, numExperts)}), then builds the row map ({@code rowIdMap}, int32 {@code
   * numTokens x topK}, written entirely) and the sources of every output row, waiting for the
   * layout ({@link RoutingMapLauncher#map}). Close the result.
   */
  public RoutingMapLauncher.DeviceMaps map(
      DeviceRouting routing, PermuteOptions options, long rowIdMap, CUstream stream) {
    return map(routing, options, rowIdMap, null, stream);
  }

  /**
   * As {@link #map(DeviceRouting, PermuteOptions, long, CUstream)}, with the scratch of {@link
   * #scratch} for this shape (or {@code null} for one of this call alone): a caller that maps batch
   * after batch on one stream allocates the device and pinned scratch once.
   */
  public RoutingMapLauncher.DeviceMaps map(
      DeviceRouting routing,
      PermuteOptions options,
      long rowIdMap,
      RoutingMapLauncher.RoutingScratch scratch,
      CUstream stream) {
    if (routing == null || options == null) {
      throw new IllegalArgumentException("routing and options must not be null");
    }
    ContractChecks.nonNegative("numTokens", routing.numTokens());
    ContractChecks.atLeastOne("topK", routing.topK());
    long slots = Math.multiplyExact(routing.numTokens(), (long) routing.topK());
    address("routing", routing.expertIds(), slots, 4);
    if (routing.withProbs()) {
      address("probs", routing.probs(), slots, 4);
    }
    address("rowIdMap", rowIdMap, slots, 4);
    checkIds(
        "routing",
        routing.expertIds(),
        routing.numTokens(),
        routing.topK(),
        options.numExperts(),
        stream);
    return kernels.routingMap().map(routing, options, rowIdMap, scratch, stream);
  }

  /** Scratch for maps of {@code numTokens x topK} slots over {@code numExperts} experts. */
  public RoutingMapLauncher.RoutingScratch scratch(long numTokens, int topK, int numExperts) {
    return kernels.routingMap().scratch(numTokens, topK, numExperts);
  }

  /**
   * Step 2 of a permute, validated: checks the shapes and addresses (the token and output rows of
   * one hidden size and dtype, the maps of {@link #map} for them), then reads each token row once
   * and writes it to each of its output rows, zeroing padding rows.
   */
  public void permuteRows(PermuteLauncher.Rows rows, CUstream stream) {
    if (rows == null) {
      throw new IllegalArgumentException("rows must not be null");
    }
    DeviceRows tokens = rows.tokens();
    DeviceRows out = rows.permuted();
    sameRows("tokens", tokens, "permuted", out);
    ContractChecks.atLeastOne("topK", rows.topK());
    long slots = Math.multiplyExact(tokens.rows(), (long) rows.topK());
    address("tokens", tokens.address(), Math.multiplyExact(tokens.rows(), tokens.rowBytes()), 1);
    address("permuted", out.address(), Math.multiplyExact(out.rows(), out.rowBytes()), 1);
    address("rowIdMap", rows.rowIdMap(), slots, 4);
    address("srcToken", rows.srcToken(), rows.hasPadding() ? out.rows() : 0, 8);
    kernels.permute().permuteRows(rows, stream);
  }

  /**
   * Unpermute, validated: checks the shapes, the dtype (not FP8), the addresses and every row id
   * ({@code -1} or in {@code [0, numOut)}), then combines the expert outputs into {@code out}.
   */
  public void unpermute(UnpermuteLauncher.Combine combine, CUstream stream) {
    if (combine == null) {
      throw new IllegalArgumentException("combine must not be null");
    }
    DeviceRows in = combine.expertOut();
    DeviceRows out = combine.out();
    sameRows("expertOut", in, "out", out);
    ContractChecks.requireCombinable(in.dtype());
    ContractChecks.atLeastOne("topK", combine.topK());
    if (in.rows() > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "numOut = " + in.rows() + " is invalid: must be < 2^31 (row ids are int32)");
    }
    long slots = Math.multiplyExact(out.rows(), (long) combine.topK());
    address("expertOut", in.address(), Math.multiplyExact(in.rows(), in.rowBytes()), 1);
    address("out", out.address(), Math.multiplyExact(out.rows(), out.rowBytes()), 1);
    address("rowIdMap", combine.rowIdMap(), slots, 4);
    if (combine.probs() != 0) {
      address("probs", combine.probs(), slots, 4);
    }
    checkIds("rowIdMap", combine.rowIdMap(), out.rows(), combine.topK(), in.rows(), stream);
    kernels.unpermute().unpermute(combine, stream);
  }

  /** Two row matrices of one hidden size and dtype, each of {@code >= 0} rows. */
  private static void sameRows(String a, DeviceRows x, String b, DeviceRows y) {
    if (x == null || y == null) {
      throw new IllegalArgumentException(a + " and " + b + " must not be null");
    }
    ContractChecks.nonNegative(a + " rows", x.rows());
    ContractChecks.nonNegative(b + " rows", y.rows());
    ContractChecks.atLeastOne("hidden", x.hidden());
    if (x.dtype() == null || y.dtype() == null) {
      throw new IllegalArgumentException("dtype is null: must be one of F32, BF16, F16, FP8_*");
    }
    if (x.hidden() != y.hidden() || x.dtype() != y.dtype()) {
      throw new IllegalArgumentException(
          b
              + " has hidden = "
              + y.hidden()
              + " of "
              + y.dtype()
              + ": must match "
              + a
              + " ("
              + x.hidden()
              + " of "
              + x.dtype()
              + ")");
    }
  }

  /** A device address that must hold {@code count} elements of {@code align} bytes. */
  private static void address(String name, long address, long count, int align) {
    if (count > 0 && address == 0) {
      throw new IllegalArgumentException(
          name + " is a null device address: it must hold " + count + " elements");
    }
    if (address % align != 0) {
      throw new IllegalArgumentException(
          name
              + " = 0x"
              + Long.toHexString(address)
              + " is invalid: must be aligned to "
              + align
              + " bytes");
    }
  }

  /**
   * The {@code n x k} int32 map at device address {@code ids}, read to the host (after the work
   * queued on {@code stream}), checked by {@link ContractChecks#checkIds}.
   */
  private void checkIds(String name, long ids, long n, int k, long bound, CUstream stream) {
    long bytes = 4L * n * k;
    if (bytes == 0) {
      return;
    }
    try (HostBuffer host = HostBuffer.allocate(bytes)) {
      kernels.copies().copyToHost(host.address(), ids, bytes, stream);
      kernels.device().synchronize(DeviceCopies.orDefault(stream));
      ContractChecks.checkIds(name, host, n, k, bound, checks);
    }
  }
}
