package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.memory.HostBuffer;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * The contract's operations on device memory, for callers that hold their data on the GPU (the
 * host-buffer {@link CudaBackend}, and a RAPIDS/cudf integration with cudf's device addresses).
 * Every pointer is a raw 64-bit device address on {@link #device()}; every method queues its work
 * on {@code stream} ({@code null}: the calling thread's per-thread default stream) and returns
 * without waiting, except {@link #plan}, which waits for the per-expert counts. Inputs are assumed
 * validated (see {@link io.moeprep.kernels.contract.ContractChecks}).
 *
 * <p>A permute is three steps, so that the caller can allocate the outputs once their size is
 * known: {@link #plan} (count slots per expert on the device, compute the {@link SegmentLayout} on
 * the host), {@link #buildMaps} (row map and sources), {@link #permuteRows} (the data).
 */
public final class DeviceKernels {
  private static final int BLOCK = 256;
  private static final int SCATTER_WARPS = 4;
  private static final int SHARED_LIMIT = 48 * 1024;
  private static final long MAX_TABLE_ENTRIES = 1L << 22;

  /** Most slots of a batch whose maps the fused kernel builds. */
  public static final long FUSED_MAX_SLOTS = 1L << 22;

  /** Most blocks of the fused kernel (kFusedMaxBlocks in routing_map.cu). */
  private static final long FUSED_MAX_BLOCKS = 512;

  /**
   * Fewest slots per block of the fused kernel; {@code -Dmoeprep.cuda.fusedMinBlockSlots} changes
   * it for scratch made afterwards (tests, tuning).
   */
  private static final long FUSED_MIN_BLOCK_SLOTS = 512;

  /**
   * Grids of at most this many table cells (blocks with slots x {@link #fusedStride}) take the
   * fused kernel's tagged table: each block tags its counts with the launch's number and sums the
   * whole table itself (at most 16 loads of 16 bytes per thread, all in flight at once) as soon as
   * it is tagged, with no barrier; larger grids take two grid barriers. {@code
   * -Dmoeprep.cuda.fusedTaggedCells} changes it for scratch made afterwards.
   */
  private static final long FUSED_TAGGED_CELLS = 16384;

  /** Most experts of a batch whose maps the fused kernel builds (its shared memory). */
  public static final int FUSED_MAX_EXPERTS = 768;

  private final CudaDevice device;

  private DeviceKernels(CudaDevice device) {
    this.device = device;
  }

  /** The operations on {@code device}. */
  public static DeviceKernels on(CudaDevice device) {
    return new DeviceKernels(device);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return device;
  }

  /**
   * Device and pinned host scratch for {@link #plan} of batches of {@code numTokens x topK} slots
   * over {@code numExperts} experts; reusable by later plans of the same shape on the same stream,
   * so that a pipeline allocates it once. Close it.
   */
  public RoutingScratch scratch(long numTokens, int topK, int numExperts) {
    return new RoutingScratch(device, numTokens * topK, numExperts);
  }

  /**
   * Step 1 of a permute: counts the valid local slots of each expert on the device (a counting sort
   * by expert over chunks of the flattened slots), waits for the {@code E} counts and computes the
   * output layout with {@link SegmentLayout#of}. The plan must be closed.
   *
   * @param routing int32 {@code numTokens x topK} expert ids or {@code -1}
   * @param scratch from {@link #scratch} for this shape, or {@code null} to allocate one for this
   *     plan alone
   */
  public RoutingPlan plan(
      long routing,
      long numTokens,
      int topK,
      PermuteOptions options,
      RoutingScratch scratch,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
    int numExperts = options.numExperts();
    long slots = numTokens * topK;
    boolean owned = scratch == null;
    RoutingScratch sc = owned ? new RoutingScratch(device, slots, numExperts) : scratch;
    sc.requireShape(slots, numExperts);
    boolean[] local = options.localExperts();
    RoutingPlan plan = new RoutingPlan(sc, owned, routing, numTokens, topK, local);
    try {
      var u = HostBuffer.unsafe();
      long host = sc.host.address();
      long dev = sc.device.address();
      long[] valid = new long[numExperts];
      if (sc.chunks > 0) {
        uploadMask(sc, local, s);
        boolean sharedHist = numExperts * 4L <= SHARED_LIMIT;
        long table = dev + RoutingScratch.tableAt(numExperts);
        if (!sharedHist) {
          check(
              JCudaDriver.cuMemsetD8Async(
                  Driver.device(table), (byte) 0, 8L * numExperts * sc.chunks, s),
              "cuMemsetD8Async(chunk table)");
        }
        device.launch(
            sharedHist ? "moeprep_count_experts_shared" : "moeprep_count_experts_global",
            Math.min(sc.chunks, device.multiprocessors() * 8L),
            BLOCK,
            sharedHist ? numExperts * 4 : 0,
            s,
            routing,
            dev + RoutingScratch.maskAt(numExperts),
            slots,
            sc.chunkSlots,
            sc.chunks,
            numExperts,
            table);
        device.launch(
            "moeprep_scan_chunks",
            Math.min(numExperts, 65535),
            BLOCK,
            0,
            s,
            table,
            sc.chunks,
            numExperts,
            dev);
        copyToHost(host, dev, 8L * numExperts, s);
        device.synchronize(s);
        for (int e = 0; e < numExperts; e++) {
          valid[e] = u.getLong(host + 8L * e);
        }
      }
      plan.layout = SegmentLayout.of(valid, local, options.capacity(), options.align());
      long at = host + RoutingScratch.keptAt(numExperts);
      for (int e = 0; e < numExperts; e++) {
        u.putLong(at + 8L * e, plan.layout.kept(e));
      }
      for (int e = 0; e <= numExperts; e++) {
        u.putLong(at + 8L * (numExperts + e), plan.layout.offset(e));
      }
      if (sc.chunks > 0 || plan.layout.numOut() > 0) {
        copyToDevice(dev + RoutingScratch.keptAt(numExperts), at, 8L * (2L * numExperts + 1), s);
      }
      return plan;
    } catch (RuntimeException | Error e) {
      plan.close();
      throw e;
    }
  }

  /**
   * Uploads the local-expert mask unless the scratch holds it already (a new mask waits for the
   * stream first: the previous upload may still read the pinned region).
   */
  private void uploadMask(RoutingScratch sc, boolean[] local, CUstream s) {
    if (java.util.Arrays.equals(sc.uploadedMask, local)) {
      return;
    }
    int numExperts = local.length;
    var u = HostBuffer.unsafe();
    long at = RoutingScratch.maskAt(numExperts);
    device.synchronize(s); // a copy of the previous mask may still read the pinned region
    for (int e = 0; e < numExperts; e++) {
      u.putByte(sc.host.address() + at + e, (byte) (local[e] ? 1 : 0));
    }
    copyToDevice(sc.device.address() + at, sc.host.address() + at, numExperts, s);
    sc.uploadedMask = local.clone();
  }

  /**
   * Steps 1 and 2 of a permute at once: the layout, the row map and the source (token, slot and
   * prob) of every output row, in the stable (expert, token, slot) order. Batches of up to {@value
   * #FUSED_MAX_SLOTS} slots over at most {@value #FUSED_MAX_EXPERTS} experts take one cooperative
   * kernel and one wait for {@code 2E + 2} numbers (the sources go to scratch buffers sized by an
   * upper bound of the output rows); others take {@link #plan} and {@link #buildMaps} into buffers
   * of the exact size. {@code -Dmoeprep.cuda.fusedMap=false} turns the fused kernel off. Waits for
   * the layout; the sources are complete in stream order. Close the result.
   *
   * @param routing int32 {@code numTokens x topK} expert ids or {@code -1}
   * @param probs float32 {@code numTokens x topK}, or 0 for none (then {@link
   *     DeviceMaps#permutedProbs()} is 0)
   * @param rowIdMap int32 {@code numTokens x topK}, the output, written entirely
   * @param scratch from {@link #scratch} for this shape, or {@code null} for one of this call
   */
  public DeviceMaps map(
      long routing,
      long probs,
      long numTokens,
      int topK,
      PermuteOptions options,
      long rowIdMap,
      RoutingScratch scratch,
      CUstream stream) {
    DeviceMaps maps = mapAsync(routing, probs, numTokens, topK, options, rowIdMap, scratch, stream);
    try {
      maps.layout(); // waits
      return maps;
    } catch (RuntimeException | Error e) {
      maps.close();
      throw e;
    }
  }

  /**
   * As {@link #map}, without waiting where the fused kernel applies: the row map and the sources
   * are queued on the stream (their addresses are valid at once), and {@link DeviceMaps#layout()}
   * waits for the layout when first asked. A pipeline that needs no output size before the data
   * kernel (no padding: capacity none or per expert unpadded, align 1, and outputs sized for the
   * worst case) thus runs without any host round trip. Close the result.
   */
  public DeviceMaps mapAsync(
      long routing,
      long probs,
      long numTokens,
      int topK,
      PermuteOptions options,
      long rowIdMap,
      RoutingScratch scratch,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
    int numExperts = options.numExperts();
    long slots = numTokens * topK;
    long bound = outputBound(slots, options);
    boolean fused =
        slots > 0
            && slots <= FUSED_MAX_SLOTS
            && numExperts <= FUSED_MAX_EXPERTS
            && bound < Integer.MAX_VALUE
            && bound <= 4 * slots + (1L << 20)
            && !"false".equals(System.getProperty("moeprep.cuda.fusedMap"));
    if (!fused) {
      RoutingPlan plan = plan(routing, numTokens, topK, options, scratch, s);
      DeviceMaps maps = new DeviceMaps(plan.layout, plan);
      try {
        long numOut = plan.numOut();
        maps.own(numOut, probs != 0);
        buildMaps(plan, rowIdMap, maps.srcToken, maps.srcSlot, probs, maps.permutedProbs, s);
        return maps;
      } catch (RuntimeException | Error e) {
        maps.close();
        throw e;
      }
    }
    boolean owned = scratch == null;
    RoutingScratch sc = owned ? new RoutingScratch(device, slots, numExperts) : scratch;
    try {
      sc.requireShape(slots, numExperts);
      boolean[] local = options.localExperts();
      uploadMask(sc, local, s);
      sc.prepareFused(this, bound, s);
      CapacityPolicy cap = options.capacity();
      int capMode = 0;
      long capValue = 0;
      boolean pad = false;
      if (cap instanceof CapacityPolicy.PerExpert p) {
        capMode = 1;
        capValue = p.capacity();
        pad = p.padToCapacity();
      } else if (cap instanceof CapacityPolicy.NumOut n) {
        capMode = 2;
        capValue = n.numOut();
      }
      long dev = sc.device.address();
      long f = sc.fused.address();
      long seq = ++sc.fusedSeq;
      device.launchCooperative(
          "moeprep_map_fused",
          sc.fusedBlocks,
          BLOCK,
          fusedShared(numExperts),
          s,
          routing,
          dev + RoutingScratch.maskAt(numExperts),
          slots,
          topK,
          numExperts,
          capMode,
          capValue,
          pad ? 1 : 0,
          options.align(),
          sc.fusedBlockSlots,
          probs,
          rowIdMap,
          sc.srcToken(),
          sc.srcSlot(),
          probs == 0 ? 0L : sc.permutedProbs(),
          f + sc.fusedTableAt(),
          f + RoutingScratch.FUSED_VALID_AT,
          f,
          sc.fusedTaggedStride,
          sc.host.address() + sc.fusedResultAt(),
          seq);
      DeviceMaps maps = new DeviceMaps(null, null);
      maps.pending = new Pending(sc, seq, local, cap, options.align(), s);
      maps.srcToken = sc.srcToken();
      maps.srcSlot = sc.srcSlot();
      maps.permutedProbs = probs == 0 ? 0 : sc.permutedProbs();
      maps.ownedScratch = owned ? sc : null;
      return maps;
    } catch (RuntimeException | Error e) {
      if (owned) {
        sc.close();
      }
      throw e;
    }
  }

  /**
   * The fused kernel's tagged table row: {@code numExperts} counts padded to 4 times a power of two
   * (a thread of the kernel loads 4 at once; the threads that share a group of 4 are a power of two
   * apart), at most 4 x {@link #BLOCK} (kFusedMaxStride in routing_map.cu).
   */
  static int fusedStride(int numExperts) {
    int quads = Math.max(1, (numExperts + 3) / 4);
    return 4 * (quads == 1 ? 1 : Integer.highestOneBit(quads - 1) << 1);
  }

  /** Dynamic shared memory of moeprep_map_fused: kept, offsets, per-warp ranks, mask. */
  private static int fusedShared(int numExperts) {
    return 8 * (2 * numExperts + 1) + 4 * (BLOCK / 32) * numExperts + numExperts;
  }

  /**
   * An upper bound of the output rows of a permute of {@code slots} slots under {@code options},
   * without counting: every slot kept, each local segment padded by up to {@code align - 1}.
   * Saturates at {@link Long#MAX_VALUE}.
   */
  static long outputBound(long slots, PermuteOptions options) {
    boolean[] local = options.localExperts();
    long locals = 0;
    for (boolean l : local) {
      locals += l ? 1 : 0;
    }
    long slack = locals * (options.align() - 1);
    CapacityPolicy cap = options.capacity();
    try {
      if (cap instanceof CapacityPolicy.PerExpert p) {
        if (p.padToCapacity()) {
          long seg = Math.addExact(p.capacity(), options.align() - 1);
          return Math.multiplyExact(locals, seg);
        }
        long kept = Math.min(slots, Math.multiplyExact(locals, p.capacity()));
        return Math.addExact(kept, slack);
      }
      if (cap instanceof CapacityPolicy.NumOut n) {
        return Math.max(n.numOut(), Math.addExact(Math.min(slots, n.numOut()), slack));
      }
      return Math.addExact(slots, slack);
    } catch (ArithmeticException e) {
      return Long.MAX_VALUE;
    }
  }

  /**
   * Step 2 of a permute: writes the row map and the source of every output row, in the stable
   * (expert, token, slot) order. Call once per plan.
   *
   * @param rowIdMap int32 {@code numTokens x topK}, written entirely ({@code -1}: masked or
   *     dropped)
   * @param srcToken int64 {@code numOut}, {@code -1} on padding rows
   * @param srcSlot int64 {@code numOut}, {@code -1} on padding rows
   * @param probs float32 {@code numTokens x topK}, or 0 for none
   * @param permutedProbs float32 {@code numOut} ({@code 0} on padding rows), or 0 when {@code
   *     probs} is 0
   */
  public void buildMaps(
      RoutingPlan plan,
      long rowIdMap,
      long srcToken,
      long srcSlot,
      long probs,
      long permutedProbs,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
    long numOut = plan.layout.numOut();
    RoutingScratch sc = plan.scratch;
    if (sc.chunks == 0 && numOut == 0) {
      return;
    }
    int numExperts = plan.local.length;
    long dev = sc.device.address();
    // per-warp ranks, kept counts, offsets and the mask of the block in shared memory
    long sharedBytes = 8L * SCATTER_WARPS * numExperts + 16L * numExperts + 8 + numExperts;
    boolean sharedRanks = sharedBytes <= SHARED_LIMIT;
    device.launch(
        sharedRanks ? "moeprep_scatter_rows_shared" : "moeprep_scatter_rows_global",
        Math.max(
            1,
            Math.min(
                ceilDiv(Math.max(sc.chunks, numExperts + 1), SCATTER_WARPS),
                device.multiprocessors() * 16L)),
        SCATTER_WARPS * 32,
        sharedRanks ? (int) sharedBytes : 0,
        s,
        plan.routing,
        dev + RoutingScratch.maskAt(numExperts),
        plan.numTokens * plan.topK,
        plan.topK,
        sc.chunkSlots,
        sc.chunks,
        numExperts,
        dev + RoutingScratch.tableAt(numExperts),
        dev + RoutingScratch.keptAt(numExperts),
        dev + RoutingScratch.keptAt(numExperts) + 8L * numExperts,
        rowIdMap,
        srcToken,
        srcSlot,
        probs,
        probs == 0 ? 0L : permutedProbs,
        numOut);
  }

  /**
   * Step 3 of a permute: reads each token row once and writes it to each of its output rows; with
   * {@code hasPadding}, also zeroes the rows whose source token is {@code -1}.
   *
   * @param tokens {@code numTokens x hidden} elements of {@code dtype}
   * @param rowIdMap int32 {@code numTokens x topK} from {@link #buildMaps}
   * @param srcToken int64 {@code numOut} from {@link #buildMaps}
   * @param permuted {@code numOut x hidden} elements, the output
   */
  public void permuteRows(
      long tokens,
      long rowIdMap,
      long numTokens,
      int topK,
      long srcToken,
      long permuted,
      long numOut,
      boolean hasPadding,
      int hidden,
      DType dtype,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
    long rowBytes = (long) hidden * dtype.bytes();
    int v = unitBytes(rowBytes, 1, tokens, permuted);
    long units = rowBytes / v;
    // 8 units per thread when rows allow 16-byte units
    int lanes = lanes(units, v == 16 ? 8 : 4);
    device.launch(
        "moeprep_permute_rows_v" + v,
        rowBlocks(numTokens, lanes),
        BLOCK,
        0,
        s,
        tokens,
        rowIdMap,
        permuted,
        numTokens,
        topK,
        units,
        lanes);
    if (hasPadding) {
      int zl = lanes(units, 1);
      device.launch(
          "moeprep_zero_padding_rows_v" + v,
          rowBlocks(numOut, zl),
          BLOCK,
          0,
          s,
          srcToken,
          permuted,
          numOut,
          units,
          zl);
    }
  }

  /**
   * Combines expert outputs: {@code out[t] = round(sum_k p(t,k) * expertOut[rowId(t,k)])} in
   * float32, in slot order, without fused multiply-add.
   *
   * @param expertOut {@code numOut x hidden} elements of {@code dtype} (not FP8)
   * @param numOut rows of {@code expertOut}
   * @param rowIdMap int32 {@code numTokens x topK}
   * @param probs float32 {@code numTokens x topK}, or 0 for weight 1
   * @param out {@code numTokens x hidden} elements, the output
   */
  public void unpermute(
      long expertOut,
      long numOut,
      long rowIdMap,
      long probs,
      long out,
      long numTokens,
      int topK,
      int hidden,
      DType dtype,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
    String name =
        switch (dtype) {
          case F32 -> "f32";
          case BF16 -> "bf16";
          case F16 -> "f16";
          default ->
              throw new IllegalArgumentException(
                  "dtype = " + dtype + " cannot be combined: FP8 needs a scale");
        };
    long rowBytes = dtype.rowBytes(hidden);
    int v = unitBytes(rowBytes, dtype.bytes(), expertOut, out);
    long units = rowBytes / v;
    // one warp per token; tokens with several kept slots on average (numOut >= 2 n) load two
    // slots' rows at once, tokens with about one (K = 1, or masked to a rank) one at a time with
    // fewer registers: measured on an H200 (kernels/src/main/cuda/README.md)
    String slots = numOut >= 2 * numTokens ? "_pairs" : "";
    long warpsPerBlock = BLOCK / 32;
    device.launch(
        "moeprep_unpermute_" + name + "_v" + v + slots,
        Math.min(ceilDiv(numTokens, warpsPerBlock), device.multiprocessors() * 32L),
        BLOCK,
        0,
        s,
        expertOut,
        rowIdMap,
        probs,
        out,
        numTokens,
        topK,
        units);
  }

  /**
   * Emits consecutive chunks of rows in the chunk order {@code sortedIndex}, probs alongside.
   *
   * @param rows {@code numRows x hidden} elements
   * @param probs float32 {@code numRows}, or 0
   * @param outRows {@code numRows x hidden} elements, the output
   * @param outProbs float32 {@code numRows}, or 0 when {@code probs} is 0
   */
  public void chunkSort(
      long rows,
      long probs,
      long outRows,
      long outProbs,
      long numRows,
      int hidden,
      DType dtype,
      long[] splitSizes,
      int[] sortedIndex,
      CUstream stream) {
    CUstream s = orDefault(stream);
    device.makeCurrent();
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
      long rowBytes = (long) hidden * dtype.bytes();
      int v = unitBytes(rowBytes, 1, rows, outRows);
      long units = rowBytes / v;
      int lanes = lanes(units, 1);
      device.launch(
          "moeprep_chunk_sort_rows_v" + v,
          rowBlocks(numRows, lanes),
          BLOCK,
          0,
          s,
          rows,
          probs,
          t.address(),
          t.address() + 8L * (chunks + 1),
          chunks,
          outRows,
          probs == 0 ? 0L : outProbs,
          numRows,
          units,
          lanes);
      // the table is freed on return: wait for the kernel that reads it
      device.synchronize(s);
    }
  }

  /** Device-to-device copy of {@code bytes} (for baselines and callers). */
  public void copy(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyDtoDAsync(
              Driver.device(dst), Driver.device(src), bytes, orDefault(stream)),
          "cuMemcpyDtoDAsync(" + bytes + " bytes)");
    }
  }

  /** Copies {@code bytes} from host address {@code src} to device address {@code dst}. */
  public void copyToDevice(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyHtoDAsync(
              Driver.device(dst), Driver.host(src), bytes, orDefault(stream)),
          "cuMemcpyHtoDAsync(" + bytes + " bytes)");
    }
  }

  /** Copies {@code bytes} from device address {@code src} to host address {@code dst}. */
  public void copyToHost(long dst, long src, long bytes, CUstream stream) {
    device.makeCurrent();
    if (bytes > 0) {
      check(
          JCudaDriver.cuMemcpyDtoHAsync(
              Driver.host(dst), Driver.device(src), bytes, orDefault(stream)),
          "cuMemcpyDtoHAsync(" + bytes + " bytes)");
    }
  }

  /**
   * The largest unit in {16, 8, 4, 2, 1} bytes, at least {@code minBytes}, that divides the row
   * bytes and every address, so that each row is moved in aligned units.
   */
  static int unitBytes(long rowBytes, int minBytes, long... addresses) {
    for (int v = 16; v >= minBytes; v >>= 1) {
      boolean ok = rowBytes % v == 0;
      for (long a : addresses) {
        ok &= a % v == 0;
      }
      if (ok) {
        return v;
      }
    }
    throw new IllegalArgumentException(
        "device addresses must be aligned to the element size " + minBytes + " bytes");
  }

  /** Threads per row: a power of two up to a block, about units / unroll. */
  static int lanes(long units, int unroll) {
    long want = Math.max(1, ceilDiv(units, unroll));
    int l = 1;
    while (l < BLOCK && l < want) {
      l <<= 1;
    }
    return l;
  }

  private long rowBlocks(long rows, int lanes) {
    long perBlock = BLOCK / lanes;
    return Math.min(ceilDiv(rows, perBlock), device.multiprocessors() * 32L);
  }

  static long ceilDiv(long a, long b) {
    return a == 0 ? 0 : (a + b - 1) / b;
  }

  static CUstream orDefault(CUstream s) {
    return s == null ? CudaDevice.PER_THREAD_STREAM : s;
  }

  /** Copies through pageable memory, which the driver stages before the call returns. */
  private void copyIn(long[] values, DeviceBuffer dst, CUstream s) {
    try (HostBuffer h = HostBuffer.allocate(8L * values.length)) {
      for (int i = 0; i < values.length; i++) {
        h.putLong(8L * i, values[i]);
      }
      copyToDevice(dst.address(), values.length == 0 ? 0 : h.address(), 8L * values.length, s);
    }
  }

  /**
   * Scratch of the counting sort: on the device, the per-expert valid counts, kept counts and
   * offsets, the local-expert mask and the {@code E x chunks} table of per-chunk ranks; in pinned
   * host memory, the counts, kept counts and offsets, and the mask. Used by one stream at a time.
   */
  public static final class RoutingScratch implements AutoCloseable {
    final long slots;
    final int numExperts;
    final long chunkSlots;
    final long chunks;
    final DeviceBuffer device;
    final PinnedBuffer host;
    boolean[] uploadedMask;

    /** In {@link #fused}: 16 bytes of barrier words, then the valid counts, then the table. */
    static final long FUSED_VALID_AT = 16;

    /** The fused kernel's barrier words, valid counts ({@code E} int64) and table. */
    DeviceBuffer fused;

    /** The sequence number of the last fused launch, which its result ends with. */
    long fusedSeq;

    /** The fused kernel's sources: token, slot (int64) and prob (float) of fusedBound rows. */
    DeviceBuffer fusedMaps;

    long fusedBound;
    long fusedBlocks;
    long fusedBlockSlots;

    /** The tagged table's row ({@link #fusedStride}), or 0 for the two-barrier path. */
    int fusedTaggedStride;

    RoutingScratch(CudaDevice dev, long slots, int numExperts) {
      this.slots = slots;
      this.numExperts = numExperts;
      // about 4096 chunks of at least 256 slots, the table at most 2^22 entries
      long cs = Math.max(256, ceilDiv(slots, 4096));
      cs = Math.max(cs, ceilDiv(slots, Math.max(1, MAX_TABLE_ENTRIES / numExperts)));
      this.chunkSlots = ceilDiv(cs, 32) * 32;
      this.chunks = ceilDiv(slots, chunkSlots);
      DeviceBuffer d = DeviceBuffer.allocate(dev, tableAt(numExperts) + 8L * numExperts * chunks);
      try {
        this.host = PinnedBuffer.allocate(dev, tableAt(numExperts) + 8L * (2L * numExperts + 3));
      } catch (RuntimeException | Error e) {
        d.close();
        throw e;
      }
      this.device = d;
    }

    /** Fails unless this scratch is for {@code slots} slots over {@code numExperts} experts. */
    void requireShape(long slots, int numExperts) {
      if (this.slots != slots || this.numExperts != numExperts) {
        throw new IllegalArgumentException(
            "scratch for "
                + this.slots
                + " slots and "
                + this.numExperts
                + " experts cannot plan "
                + slots
                + " slots and "
                + numExperts
                + " experts");
      }
    }

    /** The table's offset in {@link #fused}, 16-byte aligned (the kernel loads 16 bytes). */
    long fusedTableAt() {
      return ceilDiv(FUSED_VALID_AT + 8L * numExperts, 16) * 16;
    }

    /**
     * In {@link #host}: the fused kernel's result, written by the device into this mapped pinned
     * memory: numOut, valid counts [E], offsets [E + 1], then the launch's sequence number.
     */
    long fusedResultAt() {
      return tableAt(numExperts);
    }

    /** The host address of the fused result's sequence number (its last int64). */
    long fusedSeqAddress() {
      return host.address() + fusedResultAt() + 8L * (2L * numExperts + 2);
    }

    long srcToken() {
      return fusedMaps.address();
    }

    long srcSlot() {
      return fusedMaps.address() + 8L * fusedBound;
    }

    long permutedProbs() {
      return fusedMaps.address() + 16L * fusedBound;
    }

    /**
     * Allocates the fused kernel's memory on first use (its grid: at most two blocks per
     * multiprocessor, at least 512 slots per block, plus one without slots) and sources for {@code
     * bound} rows.
     */
    void prepareFused(DeviceKernels k, long bound, CUstream s) {
      CudaDevice d = k.device;
      if (fused == null) {
        long most = d.cooperativeBlocks("moeprep_map_fused", BLOCK, fusedShared(numExperts));
        if (most < 2) {
          throw new IllegalStateException("moeprep_map_fused cannot be resident on " + d);
        }
        // two blocks per multiprocessor where they fit, at least FUSED_MIN_BLOCK_SLOTS slots each
        // (each warp walks its range in one or more steps of 256 slots), plus one block without
        // slots that publishes the result; the kernel's scan over blocks takes at most
        // FUSED_MAX_BLOCKS
        long blocks = Math.min(Math.min(most, 2L * d.multiprocessors()), FUSED_MAX_BLOCKS) - 1;
        long minSlots = Long.getLong("moeprep.cuda.fusedMinBlockSlots", FUSED_MIN_BLOCK_SLOTS);
        blocks = Math.max(1, Math.min(blocks, slots / Math.max(1, minSlots)));
        fusedBlockSlots = ceilDiv(ceilDiv(slots, blocks), BLOCK) * BLOCK;
        fusedBlocks = ceilDiv(slots, fusedBlockSlots) + 1;
        int stride = fusedStride(numExperts);
        fusedTaggedStride =
            (fusedBlocks - 1) * stride
                    <= Long.getLong("moeprep.cuda.fusedTaggedCells", FUSED_TAGGED_CELLS)
                ? stride
                : 0;
        // zero: the barrier counts from there, and the tagged cells carry no launch's number
        long fusedBytes = fusedTableAt() + 4L * Math.max(stride, numExperts) * fusedBlocks;
        DeviceBuffer f = DeviceBuffer.allocate(d, fusedBytes);
        try {
          check(
              JCudaDriver.cuMemsetD8Async(Driver.device(f.address()), (byte) 0, fusedBytes, s),
              "cuMemsetD8Async(fused map scratch)");
        } catch (RuntimeException | Error e) {
          f.close();
          throw e;
        }
        fused = f;
        // the sequence word starts below every launch's number, whatever the pinned memory held
        HostBuffer.unsafe().putLongVolatile(null, fusedSeqAddress(), 0L);
      }
      if (fusedMaps == null || fusedBound < bound) {
        if (fusedMaps != null) {
          fusedMaps.close(); // cuMemFree waits for the work that uses it
        }
        fusedMaps = null;
        fusedMaps = DeviceBuffer.allocate(d, 20L * Math.max(1, bound));
        fusedBound = Math.max(1, bound);
      }
    }

    static long keptAt(int e) {
      return 8L * e;
    }

    static long maskAt(int e) {
      return 8L * e + 8L * (2L * e + 1);
    }

    static long tableAt(int e) {
      return maskAt(e) + (e + 7L) / 8 * 8;
    }

    /** Frees the device and pinned memory (waiting for the device's work on it). */
    @Override
    public void close() {
      try (DeviceBuffer a = device;
          PinnedBuffer b = host;
          DeviceBuffer c = fused;
          DeviceBuffer m = fusedMaps) {
        // all closed
      }
    }
  }

  /**
   * The maps of one permute from {@link #map}: the layout and the device addresses of the source
   * token, slot and prob of every output row (in the scratch, or in memory this object owns). Valid
   * until closed, or until the scratch serves the next batch. Close it.
   */
  public final class DeviceMaps implements AutoCloseable {
    private SegmentLayout layout;
    private Pending pending;
    private final RoutingPlan plan;
    private DeviceBuffer ownedMaps;
    private RoutingScratch ownedScratch;
    private long srcToken;
    private long srcSlot;
    private long permutedProbs;

    private DeviceMaps(SegmentLayout layout, RoutingPlan plan) {
      this.layout = layout;
      this.plan = plan;
    }

    /** Exact-size sources in memory of this object. */
    private void own(long numOut, boolean withProbs) {
      ownedMaps = DeviceBuffer.allocate(device, numOut * (withProbs ? 20 : 16));
      srcToken = ownedMaps.address();
      srcSlot = srcToken + 8 * numOut;
      permutedProbs = withProbs ? srcToken + 16 * numOut : 0;
    }

    /**
     * The output layout; after {@link #mapAsync}, the first call waits for the fused kernel's
     * counts and checks its layout against {@link SegmentLayout}'s.
     */
    public SegmentLayout layout() {
      if (pending != null) {
        layout = pending.resolve();
        pending = null;
      }
      return layout;
    }

    /** Output rows, padding included (waits like {@link #layout()}). */
    public long numOut() {
      return layout().numOut();
    }

    /** True when some output rows are padding (waits like {@link #layout()}). */
    public boolean hasPadding() {
      return layout().hasPadding();
    }

    /** int64 {@code numOut}: the source token of each output row, {@code -1} on padding. */
    public long srcToken() {
      return srcToken;
    }

    /** int64 {@code numOut}: the source slot of each output row, {@code -1} on padding. */
    public long srcSlot() {
      return srcSlot;
    }

    /** float32 {@code numOut}: each output row's prob (0 on padding), or 0 without probs. */
    public long permutedProbs() {
      return permutedProbs;
    }

    /** Frees what this object owns (waiting for the device's work on it). */
    @Override
    public void close() {
      try (DeviceBuffer a = ownedMaps;
          RoutingPlan b = plan;
          RoutingScratch c = ownedScratch) {
        // all closed
      }
    }
  }

  /**
   * The fused kernel's result on its way to the host: what {@link DeviceMaps#layout()} waits for.
   */
  private final class Pending {
    private final RoutingScratch scratch;
    private final long seq;
    private final boolean[] local;
    private final CapacityPolicy capacity;
    private final int align;
    private final CUstream stream;

    Pending(
        RoutingScratch scratch,
        long seq,
        boolean[] local,
        CapacityPolicy capacity,
        int align,
        CUstream stream) {
      this.scratch = scratch;
      this.seq = seq;
      this.local = local;
      this.capacity = capacity;
      this.align = align;
      this.stream = stream;
    }

    /** Spins of the wait for the layout before it blocks in the driver (a few milliseconds). */
    private static final long SPIN_LIMIT = 1L << 17;

    /**
     * Waits for the result (numOut, valid counts, offsets), which the kernel writes into mapped
     * pinned memory before it scatters, and checks it. Spins on the sequence number, asking the
     * stream now and then whether the kernel ended without it (a fault).
     */
    SegmentLayout resolve() {
      device.makeCurrent();
      var u = HostBuffer.unsafe();
      long host = scratch.host.address() + scratch.fusedResultAt();
      int numExperts = local.length;
      long seqAt = scratch.fusedSeqAddress();
      // spin a few milliseconds (the layout comes within microseconds of the kernel's start),
      // asking the stream now and then whether the kernel ended without it; then block in the
      // driver instead of burning a core while the kernel waits behind other work
      for (long spins = 1; u.getLongVolatile(null, seqAt) != seq; spins++) {
        Thread.onSpinWait();
        if (spins % 1024 != 0) {
          continue;
        }
        int rc =
            spins >= SPIN_LIMIT
                ? JCudaDriver.cuStreamSynchronize(stream)
                : JCudaDriver.cuStreamQuery(stream);
        if (rc == CUresult.CUDA_SUCCESS && u.getLongVolatile(null, seqAt) != seq) {
          throw new IllegalStateException(
              "moeprep_map_fused ended without writing its result (sequence "
                  + u.getLongVolatile(null, seqAt)
                  + ", expected "
                  + seq
                  + "): a kernel bug; -Dmoeprep.cuda.fusedMap=false avoids the fused kernel");
        }
        if (rc != CUresult.CUDA_ERROR_NOT_READY && rc != CUresult.CUDA_SUCCESS) {
          check(rc, "moeprep_map_fused (waiting for its result)");
        }
      }
      long[] valid = new long[numExperts];
      for (int e = 0; e < numExperts; e++) {
        valid[e] = u.getLong(host + 8L * (1 + e));
      }
      SegmentLayout layout = SegmentLayout.of(valid, local, capacity, align);
      boolean same = layout.numOut() == u.getLong(host);
      for (int e = 0; e <= numExperts; e++) {
        same &= layout.offset(e) == u.getLong(host + 8L * (1 + numExperts + e));
      }
      if (!same) {
        throw new IllegalStateException(
            "moeprep_map_fused computed a layout other than SegmentLayout's (numOut "
                + u.getLong(host)
                + " vs "
                + layout.numOut()
                + "): a kernel bug; -Dmoeprep.cuda.fusedMap=false avoids the fused kernel");
      }
      return layout;
    }
  }

  /**
   * The state between {@link #plan} and {@link #buildMaps}: the layout, and the scratch of the
   * counting sort (closed with the plan when the plan allocated it). Close it.
   */
  public static final class RoutingPlan implements AutoCloseable {
    final RoutingScratch scratch;
    final boolean ownsScratch;
    final long routing;
    final long numTokens;
    final int topK;
    final boolean[] local;
    SegmentLayout layout;

    RoutingPlan(
        RoutingScratch scratch,
        boolean ownsScratch,
        long routing,
        long numTokens,
        int topK,
        boolean[] local) {
      this.scratch = scratch;
      this.ownsScratch = ownsScratch;
      this.routing = routing;
      this.numTokens = numTokens;
      this.topK = topK;
      this.local = local;
    }

    /** The output layout: kept and dropped slots per expert, segment offsets, output rows. */
    public SegmentLayout layout() {
      return layout;
    }

    /** Output rows, padding included. */
    public long numOut() {
      return layout.numOut();
    }

    /** True when some output rows are padding (zero rows with source {@code -1}). */
    public boolean hasPadding() {
      return layout.hasPadding();
    }

    /** Frees the scratch if the plan allocated it (waiting for the device's work on it). */
    @Override
    public void close() {
      if (ownsScratch) {
        scratch.close();
      }
    }
  }
}
