package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.LaunchGeometry.BLOCK;
import static io.moeprep.kernels.cuda.LaunchGeometry.lanes;
import static io.moeprep.kernels.cuda.LaunchGeometry.rowBlocks;
import static io.moeprep.kernels.cuda.LaunchGeometry.unitBytes;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.memory.HostBuffer;
import jcuda.driver.CUstream;

/**
 * The launcher of {@code chunk_sort.cu}: consecutive chunks of rows emitted in another chunk order.
 * Pointers are raw device addresses on {@link #device()}; work is queued on {@code stream} ({@code
 * null}: the per-thread default stream). Inputs are assumed validated.
 */
public final class ChunkSortLauncher {
  /** The module this launcher loads its kernels from. */
  static final String MODULE = "chunk_sort";

  private final KernelModule module;
  private final DeviceCopies copies;

  ChunkSortLauncher(CudaDevice device, KernelTuning tuning) {
    this.module = new KernelModule(device, MODULE, tuning);
    this.copies = DeviceCopies.on(device);
  }

  /** The launcher on {@code device} with {@code tuning}. */
  public static ChunkSortLauncher on(CudaDevice device, KernelTuning tuning) {
    return new ChunkSortLauncher(device, tuning);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return module.device();
  }

  /**
   * What {@link #chunkSort} reorders.
   *
   * @param rows the {@code numRows x hidden} input rows
   * @param probs float32 {@code numRows}, or 0
   * @param outRows the output rows (same shape)
   * @param outProbs float32 {@code numRows}, or 0 when {@code probs} is 0
   * @param splitSizes rows per input chunk
   * @param sortedIndex the input chunk emitted at each output position
   */
  public record Chunks(
      DeviceRows rows,
      long probs,
      DeviceRows outRows,
      long outProbs,
      long[] splitSizes,
      int[] sortedIndex) {}

  /**
   * Emits consecutive chunks of rows in the chunk order {@code sortedIndex}, probs alongside. Waits
   * for the kernel (its chunk table is freed on return).
   */
  public void chunkSort(Chunks a, CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    int[] sortedIndex = a.sortedIndex();
    long[] splitSizes = a.splitSizes();
    long numRows = a.rows().rows();
    int chunks = sortedIndex.length;
    if (numRows == 0 || chunks == 0) {
      return;
    }
    long[] srcOff = new long[chunks + 1];
    for (int i = 0; i < chunks; i++) {
      srcOff[i + 1] = srcOff[i] + splitSizes[i];
    }
    long[] table = new long[2 * chunks + 1];
    for (int i = 0; i < chunks; i++) {
      table[i + 1] = table[i] + splitSizes[sortedIndex[i]];
      table[chunks + 1 + i] = srcOff[sortedIndex[i]];
    }
    try (DeviceBuffer t = DeviceBuffer.allocate(device, 8L * table.length)) {
      copyIn(table, t, s);
      long rowBytes = a.rows().rowBytes();
      int v = unitBytes(rowBytes, 1, a.rows().address(), a.outRows().address());
      long units = rowBytes / v;
      int lanes = lanes(units, 1);
      module.launch(
          "moeprep_chunk_sort_rows_v" + v,
          rowBlocks(device, numRows, lanes),
          BLOCK,
          0,
          s,
          a.rows().address(),
          a.probs(),
          t.address(),
          t.address() + 8L * (chunks + 1),
          chunks,
          a.outRows().address(),
          a.probs() == 0 ? 0L : a.outProbs(),
          numRows,
          units,
          lanes);
      // the table is freed on return: wait for the kernel that reads it
      device.synchronize(s);
    }
  }

  /** Copies through pageable memory, which the driver stages before the call returns. */
  private void copyIn(long[] values, DeviceBuffer dst, CUstream s) {
    try (HostBuffer h = HostBuffer.allocate(8L * values.length)) {
      for (int i = 0; i < values.length; i++) {
        h.putLong(8L * i, values[i]);
      }
      copies.copyToDevice(
          dst.address(), values.length == 0 ? 0 : h.address(), 8L * values.length, s);
    }
  }
}
