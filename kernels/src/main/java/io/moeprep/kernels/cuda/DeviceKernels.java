package io.moeprep.kernels.cuda;

import io.moeprep.kernels.KernelTuning;

/**
 * The launchers of one device with one tuning, one per {@code .cu} file: {@link RoutingMapLauncher}
 * ({@code routing_map.cu}), {@link PermuteLauncher} ({@code permute.cu}), {@link UnpermuteLauncher}
 * ({@code unpermute.cu}), {@link ChunkSortLauncher} ({@code chunk_sort.cu}), and the copies.
 * Unchecked: callers that hold their data on the GPU and want the contract's checks use {@link
 * DeviceMoeKernels}.
 */
public final class DeviceKernels {
  private final CudaDevice device;
  private final KernelTuning tuning;
  private final RoutingMapLauncher routingMap;
  private final PermuteLauncher permute;
  private final UnpermuteLauncher unpermute;
  private final ChunkSortLauncher chunkSort;
  private final DeviceCopies copies;

  private DeviceKernels(CudaDevice device, KernelTuning tuning) {
    this.device = device;
    this.tuning = tuning;
    this.routingMap = new RoutingMapLauncher(device, tuning);
    this.permute = new PermuteLauncher(device, tuning);
    this.unpermute = new UnpermuteLauncher(device, tuning);
    this.chunkSort = new ChunkSortLauncher(device, tuning);
    this.copies = DeviceCopies.on(device);
  }

  /** The launchers on {@code device} with {@code tuning}. */
  public static DeviceKernels on(CudaDevice device, KernelTuning tuning) {
    return new DeviceKernels(device, tuning);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return device;
  }

  /** The tuning every launch carries. */
  public KernelTuning tuning() {
    return tuning;
  }

  /** The maps of a permute ({@code routing_map.cu}). */
  public RoutingMapLauncher routingMap() {
    return routingMap;
  }

  /** The data step of a permute ({@code permute.cu}). */
  public PermuteLauncher permute() {
    return permute;
  }

  /** The combine ({@code unpermute.cu}). */
  public UnpermuteLauncher unpermute() {
    return unpermute;
  }

  /** The chunk sort ({@code chunk_sort.cu}). */
  public ChunkSortLauncher chunkSort() {
    return chunkSort;
  }

  /** Copies between host and device addresses. */
  public DeviceCopies copies() {
    return copies;
  }
}
