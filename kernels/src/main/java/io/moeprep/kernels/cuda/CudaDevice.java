package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * One GPU: its primary context (retained once with {@code cuDevicePrimaryCtxRetain}, the context
 * the CUDA runtime and cudf use; never {@code cuCtxCreate}), and the MoePrep kernel modules, loaded
 * once per device from the fatbin resources. Kernels run on the caller's stream, by default the
 * per-thread default stream. Thread-safe; call {@link #makeCurrent()} on every calling thread (the
 * operations of this package do it themselves).
 */
public final class CudaDevice {
  /** The per-thread default stream ({@code CU_STREAM_PER_THREAD}). */
  public static final CUstream PER_THREAD_STREAM = JCudaDriver.CU_STREAM_PER_THREAD;

  private static final Map<Integer, CudaDevice> DEVICES = new ConcurrentHashMap<>();

  private final int ordinal;
  private final CUcontext context = new CUcontext();
  private final int multiprocessors;
  private final String name;
  private final Map<String, CUfunction> functions = new ConcurrentHashMap<>();
  private final Map<String, CUmodule> modules = new ConcurrentHashMap<>();
  private final java.util.concurrent.atomic.AtomicLong allocated =
      new java.util.concurrent.atomic.AtomicLong();
  private volatile long memoryLimit;

  private CudaDevice(int ordinal) {
    this.ordinal = ordinal;
    CUdevice device = new CUdevice();
    check(JCudaDriver.cuDeviceGet(device, ordinal), "cuDeviceGet(" + ordinal + ")");
    check(JCudaDriver.cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
    makeCurrent();
    int[] v = new int[1];
    check(
        JCudaDriver.cuDeviceGetAttribute(
            v, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
        "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
    this.multiprocessors = v[0];
    byte[] nameBytes = new byte[256];
    check(JCudaDriver.cuDeviceGetName(nameBytes, nameBytes.length, device), "cuDeviceGetName");
    this.name =
        new String(nameBytes, 0, strlen(nameBytes), java.nio.charset.StandardCharsets.UTF_8);
    for (String module : Fatbins.MODULES) {
      loadModule(module);
    }
  }

  /**
   * The device with this ordinal, its context retained and modules loaded on first use.
   *
   * @throws MoePrepCudaException when the driver fails or a fatbin does not load
   */
  public static CudaDevice get(int ordinal) {
    CudaDevice d = DEVICES.get(ordinal);
    if (d == null) {
      synchronized (DEVICES) {
        d = DEVICES.computeIfAbsent(ordinal, CudaDevice::new);
      }
    }
    d.makeCurrent();
    return d;
  }

  /** Makes this device's primary context current on the calling thread. */
  public void makeCurrent() {
    int rc = JCudaDriver.cuCtxSetCurrent(context);
    if (rc != CUresult.CUDA_SUCCESS) { // the message is built only on failure (hot path)
      check(rc, "cuCtxSetCurrent(device " + ordinal + ")");
    }
  }

  /** The device ordinal. */
  public int ordinal() {
    return ordinal;
  }

  /** The device's name, such as {@code NVIDIA H100 80GB HBM3}. */
  public String name() {
    return name;
  }

  /** Streaming multiprocessors. */
  public int multiprocessors() {
    return multiprocessors;
  }

  /** Free and total device memory in bytes. */
  public long[] memoryInfo() {
    makeCurrent();
    long[] free = new long[1];
    long[] total = new long[1];
    check(JCudaDriver.cuMemGetInfo(free, total), "cuMemGetInfo");
    return new long[] {free[0], total[0]};
  }

  /**
   * Caps the device memory that MoePrep's {@link DeviceBuffer}s of this JVM may hold on this device
   * at {@code bytes} ({@code 0}: no cap but the device's own). An allocation that would cross it
   * fails with {@link DeviceOutOfMemoryException} exactly as one the driver refuses, so that a
   * smaller card's behaviour can be had on a large one, and so that MoePrep leaves room to others
   * sharing the GPU (cudf, a training process).
   */
  public void setMemoryLimit(long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("memory limit = " + bytes + " is invalid: must be >= 0");
    }
    memoryLimit = bytes;
  }

  /** The cap set by {@link #setMemoryLimit}, or {@code 0}. */
  public long memoryLimit() {
    return memoryLimit;
  }

  /** Bytes held by the open {@link DeviceBuffer}s on this device. */
  public long bytesAllocated() {
    return allocated.get();
  }

  /** Counts {@code bytes} against the limit before an allocation; see {@link #setMemoryLimit}. */
  void reserve(long bytes) {
    long limit = memoryLimit;
    long now = allocated.addAndGet(bytes);
    if (limit > 0 && now > limit) {
      allocated.addAndGet(-bytes);
      throw new DeviceOutOfMemoryException(
          "cuMemAlloc("
              + bytes
              + " bytes) on device "
              + ordinal
              + " refused: MoePrep's device memory limit is "
              + limit
              + " bytes and "
              + (now - bytes)
              + " are in use");
    }
  }

  /** Gives back what {@link #reserve} counted. */
  void release(long bytes) {
    allocated.addAndGet(-bytes);
  }

  /** Waits for the work queued on {@code stream}. */
  public void synchronize(CUstream stream) {
    check(JCudaDriver.cuStreamSynchronize(stream), "cuStreamSynchronize");
  }

  /**
   * The most blocks of kernel {@code kernel} of {@code module} with this block size and dynamic
   * shared memory that can be resident on the device at once (the limit of a cooperative launch).
   */
  long cooperativeBlocks(String module, String kernel, int threads, int sharedBytes) {
    int[] perSm = new int[1];
    check(
        JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(
            perSm, function(module, kernel), threads, sharedBytes),
        "cuOccupancyMaxActiveBlocksPerMultiprocessor(" + kernel + ")");
    return (long) perSm[0] * multiprocessors;
  }

  /**
   * Launches kernel {@code name} of {@code module} with a 1-D grid and checks the launch; the error
   * names the kernel and its grid. The launchers call it through their {@link KernelModule}.
   *
   * @param cooperative a cooperative launch (all blocks resident at once)
   * @param sync synchronise the stream right after, so that a fault names its kernel
   * @param args the kernel parameters, each a {@link Long} (int64 or a device pointer), an {@link
   *     Integer} (int32) or a {@link Float}, in the kernel's order
   */
  void launch(
      boolean cooperative,
      boolean sync,
      String module,
      String name,
      long blocks,
      int threads,
      int sharedBytes,
      CUstream stream,
      Object... args) {
    if (blocks <= 0) {
      return;
    }
    if (blocks > Integer.MAX_VALUE) {
      throw new IllegalStateException(name + ": grid of " + blocks + " blocks exceeds 2^31-1");
    }
    CUfunction f = function(module, name);
    // kernelParams built in native memory (values, then the array of pointers to them), so that
    // JCuda passes one address instead of marshalling an object per argument
    var u = io.moeprep.kernels.memory.HostBuffer.unsafe();
    int n = args.length;
    long mem = u.allocateMemory(16L * Math.max(1, n));
    try {
      for (int i = 0; i < n; i++) {
        Object a = args[i];
        long at = mem + 8L * i;
        if (a instanceof Long l) {
          u.putLong(at, l);
        } else if (a instanceof Integer x) {
          u.putInt(at, x);
        } else if (a instanceof Float x) {
          u.putFloat(at, x);
        } else {
          throw new IllegalArgumentException(name + ": kernel argument " + i + " is " + a);
        }
        u.putLong(mem + 8L * n + 8L * i, at);
      }
      int rc =
          cooperative
              ? JCudaDriver.cuLaunchCooperativeKernel(
                  f,
                  (int) blocks,
                  1,
                  1,
                  threads,
                  1,
                  1,
                  sharedBytes,
                  stream,
                  Driver.host(mem + 8L * n))
              : JCudaDriver.cuLaunchKernel(
                  f,
                  (int) blocks,
                  1,
                  1,
                  threads,
                  1,
                  1,
                  sharedBytes,
                  stream,
                  Driver.host(mem + 8L * n),
                  null);
      if (rc != CUresult.CUDA_SUCCESS) {
        check(rc, describe(name, blocks, threads, sharedBytes));
      }
    } finally {
      u.freeMemory(mem);
    }
    if (sync) {
      check(
          JCudaDriver.cuStreamSynchronize(stream),
          describe(name, blocks, threads, sharedBytes) + " (synchronised)");
    }
  }

  private String describe(String name, long blocks, int threads, int sharedBytes) {
    return "kernel "
        + name
        + " <<<"
        + blocks
        + ", "
        + threads
        + ", "
        + sharedBytes
        + " B shared>>> on device "
        + ordinal;
  }

  /** Kernel {@code name} of {@code module}, looked up by its exact name once per device. */
  private CUfunction function(String module, String name) {
    String key = module + "/" + name;
    CUfunction f = functions.get(key);
    if (f != null) {
      return f;
    }
    CUmodule m = modules.get(module);
    if (m == null) {
      throw new IllegalStateException("no kernel module " + module + " on device " + ordinal);
    }
    CUfunction g = new CUfunction();
    check(
        JCudaDriver.cuModuleGetFunction(g, m, name),
        "cuModuleGetFunction(" + module + ", " + name + ")");
    functions.put(key, g);
    return g;
  }

  private void loadModule(String module) {
    byte[] image = Fatbins.read(module);
    CUmodule m = new CUmodule();
    check(
        JCudaDriver.cuModuleLoadData(m, image),
        "cuModuleLoadData(" + module + ".fatbin) on device " + ordinal + " (" + name + ")");
    modules.put(module, m);
  }

  private static int strlen(byte[] b) {
    int i = 0;
    while (i < b.length && b[i] != 0) {
      i++;
    }
    return i;
  }

  @Override
  public String toString() {
    return "CudaDevice[" + ordinal + ", " + name + ", " + multiprocessors + " SMs]";
  }
}
