package io.moeprep.kernels;

/**
 * Internal tuning of the backends, passed down explicitly (never read from system properties): the
 * plugin fills it from the internal entries of its typed configuration ({@code
 * spark.moeprep.internal.*}), the application from its options. The defaults are what ships;
 * changing them is for benchmarks and tests.
 *
 * @param cpuThreads worker threads of the CPU backend's pool ({@code >= 1})
 * @param fusedMap build the routing maps with the fused single-launch kernel (else plan + build)
 * @param fusedMinBlockSlots fewest slots per block of the fused map kernel (a power of two)
 * @param fusedTaggedCells most (block, expert) cells that the fused kernel sums through its tagged
 *     table without a grid barrier
 * @param syncLaunches synchronise the stream after every launch (debugging: errors at their launch)
 * @param failLaunch for fault-injection tests only: the kernel name whose launches fail, or null
 */
public record KernelTuning(
    int cpuThreads,
    boolean fusedMap,
    long fusedMinBlockSlots,
    long fusedTaggedCells,
    boolean syncLaunches,
    String failLaunch) {

  /** What ships: every core, the fused map, the measured block sizes, no debugging. */
  public static final KernelTuning DEFAULT =
      new KernelTuning(Runtime.getRuntime().availableProcessors(), true, 512, 16384, false, null);

  /** Checks the ranges. */
  public KernelTuning {
    if (cpuThreads < 1) {
      throw new IllegalArgumentException(
          "cpuThreads = " + cpuThreads + " is invalid: must be at least 1");
    }
    if (fusedMinBlockSlots < 32 || Long.bitCount(fusedMinBlockSlots) != 1) {
      throw new IllegalArgumentException(
          "fusedMinBlockSlots = "
              + fusedMinBlockSlots
              + " is invalid: must be a power of two, at least 32");
    }
    if (fusedTaggedCells < 0) {
      throw new IllegalArgumentException(
          "fusedTaggedCells = " + fusedTaggedCells + " is invalid: must be at least 0");
    }
  }
}
