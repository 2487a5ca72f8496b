package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import jcuda.driver.CUstream;

/**
 * The contract on host-resident batches, run on one GPU: each operation copies its inputs to the
 * device (straight from the host buffers' memory), runs the kernels through the launchers of {@link
 * DeviceKernels} (with this backend's {@link KernelTuning}) on the calling thread's per-thread
 * default stream, and copies the results back. It holds no workspace between calls, so concurrent
 * tasks may share it. Results equal the CPU backend's byte for byte.
 */
public final class CudaBackend implements KernelBackend {
  private final DeviceKernels kernels;

  private CudaBackend(CudaDevice device, KernelTuning tuning) {
    this.kernels = DeviceKernels.on(device, tuning);
  }

  /**
   * The backend on device {@code ordinal} with the shipped tuning ({@link KernelTuning#DEFAULT}).
   */
  public static CudaBackend on(int ordinal) {
    return on(ordinal, KernelTuning.DEFAULT);
  }

  /** The backend on device {@code ordinal} with {@code tuning}. */
  public static CudaBackend on(int ordinal, KernelTuning tuning) {
    return new CudaBackend(CudaDevice.get(ordinal), tuning);
  }

  /** The device this backend runs on. */
  public CudaDevice device() {
    return kernels.device();
  }

  /** The tuning of this backend's launches. */
  public KernelTuning tuning() {
    return kernels.tuning();
  }

  /** The ordinal of this backend's GPU. */
  @Override
  public int deviceOrdinal() {
    return kernels.device().ordinal();
  }

  @Override
  public String name() {
    return "cuda";
  }

  /** Sets the limit of this backend's device ({@link CudaDevice#setMemoryLimit}). */
  @Override
  public void limitDeviceMemory(long bytes) {
    kernels.device().setMemoryLimit(bytes);
  }

  @Override
  public PermuteResult permute(PermuteInput in, PermuteOptions options) {
    CudaDevice dev = kernels.device();
    dev.makeCurrent();
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    long n = in.numTokens();
    int k = in.topK();
    long slots = n * k;
    long rowBytes = in.rowBytes();
    boolean withProbs = in.probs() != null;
    HostBuffer rowIdMap = null;
    HostBuffer srcToken = null;
    HostBuffer srcSlot = null;
    HostBuffer permuted = null;
    HostBuffer permutedProbs = null;
    try (DeviceBuffer dRouting = upload(in.routing(), slots * 4, s);
        DeviceBuffer dProbs = withProbs ? upload(in.probs(), slots * 4, s) : null;
        DeviceBuffer dRowId = DeviceBuffer.allocate(dev, slots * 4);
        RoutingMapLauncher.DeviceMaps maps =
            kernels
                .routingMap()
                .map(
                    new DeviceRouting(dRouting.address(), withProbs ? dProbs.address() : 0, n, k),
                    options,
                    dRowId.address(),
                    null,
                    s)) {
      long numOut = maps.numOut();
      try (DeviceBuffer dTokens = upload(in.tokens(), n * rowBytes, s);
          DeviceBuffer dPermuted = DeviceBuffer.allocate(dev, numOut * rowBytes)) {
        kernels
            .permute()
            .permuteRows(
                new PermuteLauncher.Rows(
                    new DeviceRows(dTokens.address(), n, in.hidden(), in.dtype()),
                    k,
                    dRowId.address(),
                    maps.srcToken(),
                    new DeviceRows(dPermuted.address(), numOut, in.hidden(), in.dtype()),
                    maps.hasPadding()),
                s);
        rowIdMap = download(dRowId.address(), slots * 4, s);
        srcToken = download(maps.srcToken(), numOut * 8, s);
        srcSlot = download(maps.srcSlot(), numOut * 8, s);
        if (withProbs) {
          // without tokens (N = 0) there are no probs on the device: only padding rows, prob 0
          permutedProbs =
              n == 0
                  ? HostBuffer.allocateZeroed(numOut * 4)
                  : download(maps.permutedProbs(), numOut * 4, s);
        }
        permuted = download(dPermuted.address(), numOut * rowBytes, s);
        dev.synchronize(s);
        return new PermuteResult(
            permuted,
            rowIdMap,
            srcToken,
            srcSlot,
            permutedProbs,
            maps.layout(),
            in.dtype(),
            in.hidden());
      }
    } catch (RuntimeException | Error e) {
      closeAll(rowIdMap, srcToken, srcSlot, permuted, permutedProbs);
      throw e;
    }
  }

  @Override
  public HostBuffer unpermute(UnpermuteInput in) {
    CudaDevice dev = kernels.device();
    dev.makeCurrent();
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    long n = in.numTokens();
    long slots = n * in.topK();
    long rowBytes = in.rowBytes();
    boolean withProbs = in.probs() != null;
    try (DeviceBuffer dOut = upload(in.expertOut(), in.numOut() * rowBytes, s);
        DeviceBuffer dMap = upload(in.rowIdMap(), slots * 4, s);
        DeviceBuffer dProbs = withProbs ? upload(in.probs(), slots * 4, s) : null;
        DeviceBuffer dResult = DeviceBuffer.allocate(dev, n * rowBytes)) {
      kernels
          .unpermute()
          .unpermute(
              new UnpermuteLauncher.Combine(
                  new DeviceRows(dOut.address(), in.numOut(), in.hidden(), in.dtype()),
                  dMap.address(),
                  withProbs ? dProbs.address() : 0,
                  in.topK(),
                  new DeviceRows(dResult.address(), n, in.hidden(), in.dtype())),
              s);
      HostBuffer result = download(dResult.address(), dResult.size(), s);
      dev.synchronize(s);
      return result;
    }
  }

  @Override
  public ChunkSortResult chunkSort(ChunkSortInput in) {
    CudaDevice dev = kernels.device();
    dev.makeCurrent();
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    long rows = in.numRows();
    long bytes = rows * in.rowBytes();
    boolean withProbs = in.probs() != null;
    HostBuffer outRows = null;
    HostBuffer outProbs = null;
    try (DeviceBuffer dRows = upload(in.rows(), bytes, s);
        DeviceBuffer dProbs = withProbs ? upload(in.probs(), rows * 4, s) : null;
        DeviceBuffer dOutRows = DeviceBuffer.allocate(dev, bytes);
        DeviceBuffer dOutProbs = withProbs ? DeviceBuffer.allocate(dev, rows * 4) : null) {
      kernels
          .chunkSort()
          .chunkSort(
              new ChunkSortLauncher.Chunks(
                  new DeviceRows(dRows.address(), rows, in.hidden(), in.dtype()),
                  withProbs ? dProbs.address() : 0,
                  new DeviceRows(dOutRows.address(), rows, in.hidden(), in.dtype()),
                  withProbs ? dOutProbs.address() : 0,
                  in.splitSizes(),
                  in.sortedIndex()),
              s);
      outRows = download(dOutRows.address(), bytes, s);
      outProbs = withProbs ? download(dOutProbs.address(), rows * 4, s) : null;
      dev.synchronize(s);
      return new ChunkSortResult(outRows, outProbs);
    } catch (RuntimeException | Error e) {
      closeAll(outRows, outProbs);
      throw e;
    }
  }

  /** A device copy of the first {@code bytes} of {@code src}. */
  private DeviceBuffer upload(HostBuffer src, long bytes, CUstream s) {
    DeviceBuffer d = DeviceBuffer.allocate(kernels.device(), bytes);
    try {
      if (bytes > 0) {
        kernels.copies().copyToDevice(d.address(), src.address(), bytes, s);
      }
      return d;
    } catch (RuntimeException | Error e) {
      d.close();
      throw e;
    }
  }

  /** A host copy of {@code bytes} at device address {@code src}; complete once synchronised. */
  private HostBuffer download(long src, long bytes, CUstream s) {
    HostBuffer h = HostBuffer.allocate(bytes);
    try {
      if (bytes > 0) {
        kernels.copies().copyToHost(h.address(), src, bytes, s);
      }
      return h;
    } catch (RuntimeException | Error e) {
      h.close();
      throw e;
    }
  }

  private static void closeAll(HostBuffer... buffers) {
    for (HostBuffer b : buffers) {
      if (b != null) {
        b.close();
      }
    }
  }

  @Override
  public String toString() {
    return "CudaBackend[" + kernels.device() + "]";
  }
}
