package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;
import jcuda.driver.CUstream;

/**
 * One {@code .cu} file's module on one device, as its launcher sees it: the kernels are looked up
 * by their exact {@code extern "C"} names in this module alone, and every launch carries the
 * launcher's {@link KernelTuning} (synchronised launches, fault injection). Package-private: the
 * launchers use it, nothing else.
 */
final class KernelModule {
  private final CudaDevice device;
  private final String module;
  private final KernelTuning tuning;

  KernelModule(CudaDevice device, String module, KernelTuning tuning) {
    if (!Fatbins.MODULES.contains(module)) {
      throw new IllegalArgumentException("no kernel module " + module + " in " + Fatbins.MODULES);
    }
    this.device = device;
    this.module = module;
    this.tuning = tuning;
  }

  CudaDevice device() {
    return device;
  }

  KernelTuning tuning() {
    return tuning;
  }

  /**
   * Launches kernel {@code kernel} of this module with a 1-D grid and checks the launch; the error
   * names the kernel and its grid.
   *
   * @param args the kernel parameters, each a {@link Long} (int64 or a device pointer), an {@link
   *     Integer} (int32) or a {@link Float}, in the kernel's order
   */
  void launch(
      String kernel, long blocks, int threads, int sharedBytes, CUstream stream, Object... args) {
    launch(false, kernel, blocks, threads, sharedBytes, stream, args);
  }

  /**
   * As {@link #launch}, as a cooperative launch: all blocks are resident at once, so that they may
   * wait for each other; {@code blocks} must not exceed {@link #cooperativeBlocks}.
   */
  void launchCooperative(
      String kernel, long blocks, int threads, int sharedBytes, CUstream stream, Object... args) {
    launch(true, kernel, blocks, threads, sharedBytes, stream, args);
  }

  /** The most blocks of {@code kernel} that can be resident at once (see CudaDevice). */
  long cooperativeBlocks(String kernel, int threads, int sharedBytes) {
    return device.cooperativeBlocks(module, kernel, threads, sharedBytes);
  }

  private void launch(
      boolean cooperative,
      String kernel,
      long blocks,
      int threads,
      int sharedBytes,
      CUstream stream,
      Object... args) {
    String failing = tuning.failLaunch();
    if (failing != null && !failing.isEmpty() && kernel.startsWith(failing)) {
      threads = 4096; // more than any device allows: the driver itself refuses the launch
    }
    device.launch(
        cooperative,
        tuning.syncLaunches(),
        module,
        kernel,
        blocks,
        threads,
        sharedBytes,
        stream,
        args);
  }

  @Override
  public String toString() {
    return module + " on " + device;
  }
}
