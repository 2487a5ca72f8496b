package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.LaunchGeometry.BLOCK;
import static io.moeprep.kernels.cuda.LaunchGeometry.lanes;
import static io.moeprep.kernels.cuda.LaunchGeometry.rowBlocks;
import static io.moeprep.kernels.cuda.LaunchGeometry.unitBytes;

import io.moeprep.kernels.KernelTuning;
import jcuda.driver.CUstream;

/**
 * The launcher of {@code permute.cu}: the data step of a permute, once the maps exist ({@link
 * RoutingMapLauncher}). Pointers are raw device addresses on {@link #device()}; work is queued on
 * {@code stream} ({@code null}: the per-thread default stream). Inputs are assumed validated.
 */
public final class PermuteLauncher {
  /** The module this launcher loads its kernels from. */
  static final String MODULE = "permute";

  private final KernelModule module;

  PermuteLauncher(CudaDevice device, KernelTuning tuning) {
    this.module = new KernelModule(device, MODULE, tuning);
  }

  /** The launcher on {@code device} with {@code tuning}. */
  public static PermuteLauncher on(CudaDevice device, KernelTuning tuning) {
    return new PermuteLauncher(device, tuning);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return module.device();
  }

  /**
   * What {@link #permuteRows} moves.
   *
   * @param tokens the {@code numTokens x hidden} token rows (read)
   * @param topK slots per token
   * @param rowIdMap int32 {@code numTokens x topK}: each slot's output row, or {@code -1}
   * @param srcToken int64 {@code numOut}: each output row's source token, {@code -1} on padding
   * @param permuted the {@code numOut x hidden} output rows (same hidden and dtype as {@code
   *     tokens})
   * @param hasPadding whether some output rows are padding (then they are zeroed)
   */
  public record Rows(
      DeviceRows tokens,
      int topK,
      long rowIdMap,
      long srcToken,
      DeviceRows permuted,
      boolean hasPadding) {}

  /**
   * Reads each token row once and writes it to each of its output rows; with {@code hasPadding},
   * also zeroes the rows whose source token is {@code -1}.
   */
  public void permuteRows(Rows a, CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    DeviceRows tokens = a.tokens();
    DeviceRows permuted = a.permuted();
    long rowBytes = tokens.rowBytes();
    int v = unitBytes(rowBytes, 1, tokens.address(), permuted.address());
    long units = rowBytes / v;
    // 8 units per thread when rows allow 16-byte units
    int lanes = lanes(units, v == 16 ? 8 : 4);
    module.launch(
        "moeprep_permute_rows_v" + v,
        rowBlocks(device, tokens.rows(), lanes),
        BLOCK,
        0,
        s,
        tokens.address(),
        a.rowIdMap(),
        permuted.address(),
        tokens.rows(),
        a.topK(),
        units,
        lanes);
    if (a.hasPadding()) {
      int zl = lanes(units, 1);
      module.launch(
          "moeprep_zero_padding_rows_v" + v,
          rowBlocks(device, permuted.rows(), zl),
          BLOCK,
          0,
          s,
          a.srcToken(),
          permuted.address(),
          permuted.rows(),
          units,
          zl);
    }
  }
}
