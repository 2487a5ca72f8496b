package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.LaunchGeometry.BLOCK;
import static io.moeprep.kernels.cuda.LaunchGeometry.ceilDiv;
import static io.moeprep.kernels.cuda.LaunchGeometry.unitBytes;

import io.moeprep.kernels.KernelTuning;
import jcuda.driver.CUstream;

/**
 * The launcher of {@code unpermute.cu}: the combine of expert outputs back to token rows. Pointers
 * are raw device addresses on {@link #device()}; work is queued on {@code stream} ({@code null}:
 * the per-thread default stream). Inputs are assumed validated.
 */
public final class UnpermuteLauncher {
  /** The module this launcher loads its kernels from. */
  static final String MODULE = "unpermute";

  private final KernelModule module;

  UnpermuteLauncher(CudaDevice device, KernelTuning tuning) {
    this.module = new KernelModule(device, MODULE, tuning);
  }

  /** The launcher on {@code device} with {@code tuning}. */
  public static UnpermuteLauncher on(CudaDevice device, KernelTuning tuning) {
    return new UnpermuteLauncher(device, tuning);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return module.device();
  }

  /**
   * What {@link #unpermute} combines.
   *
   * @param expertOut the {@code numOut x hidden} expert output rows (not FP8)
   * @param rowIdMap int32 {@code numTokens x topK}
   * @param probs float32 {@code numTokens x topK}, or 0 for weight 1
   * @param topK slots per token
   * @param out the {@code numTokens x hidden} output rows (same hidden and dtype)
   */
  public record Combine(
      DeviceRows expertOut, long rowIdMap, long probs, int topK, DeviceRows out) {}

  /**
   * Combines expert outputs: {@code out[t] = round(sum_k p(t,k) * expertOut[rowId(t,k)])} in
   * float32, in slot order, without fused multiply-add.
   */
  public void unpermute(Combine a, CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    DeviceRows expertOut = a.expertOut();
    DeviceRows out = a.out();
    String name =
        switch (expertOut.dtype()) {
          case F32 -> "f32";
          case BF16 -> "bf16";
          case F16 -> "f16";
          default ->
              throw new IllegalArgumentException(
                  "dtype = " + expertOut.dtype() + " cannot be combined: FP8 needs a scale");
        };
    long rowBytes = expertOut.rowBytes();
    int v = unitBytes(rowBytes, expertOut.dtype().bytes(), expertOut.address(), out.address());
    long units = rowBytes / v;
    long numTokens = out.rows();
    // one warp per token, the rows it combines streamed through shared memory (unpermute.cu)
    long warpsPerBlock = BLOCK / 32;
    module.launch(
        "moeprep_unpermute_" + name + "_v" + v,
        Math.min(ceilDiv(numTokens, warpsPerBlock), device.multiprocessors() * 32L),
        BLOCK,
        0,
        s,
        expertOut.address(),
        a.rowIdMap(),
        a.probs(),
        out.address(),
        numTokens,
        a.topK(),
        units);
  }
}
