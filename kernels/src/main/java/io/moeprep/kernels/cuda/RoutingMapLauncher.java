package io.moeprep.kernels.cuda;

import static io.moeprep.kernels.cuda.Driver.check;
import static io.moeprep.kernels.cuda.LaunchGeometry.BLOCK;
import static io.moeprep.kernels.cuda.LaunchGeometry.ceilDiv;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.memory.HostBuffer;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * The launcher of {@code routing_map.cu}: the row map and the source (token, slot, prob) of every
 * output row of a permute, built on the device from the routing. Every pointer is a raw 64-bit
 * device address on {@link #device()}; every method queues its work on {@code stream} ({@code
 * null}: the calling thread's per-thread default stream). Inputs are assumed validated (see {@link
 * DeviceMoeKernels} for the validated entry).
 *
 * <p>Two ways: {@link #map} (one cooperative kernel, {@code moeprep_map_fused}, where it applies
 * and {@link KernelTuning#fusedMap()} is on; otherwise the next two), or {@link #plan} (count slots
 * per expert, compute the {@link SegmentLayout} on the host) then {@link #buildMaps} (row map and
 * sources into buffers of the exact size).
 */
public final class RoutingMapLauncher {
  /** The module this launcher loads its kernels from. */
  static final String MODULE = "routing_map";

  /** Warps per block of the unfused scatter ({@code kScatterWarps} in routing_map.cu). */
  static final int SCATTER_WARPS = 4;

  private static final int SHARED_LIMIT = 48 * 1024;
  private static final long MAX_TABLE_ENTRIES = 1L << 22;

  /** Most slots of a batch whose maps the fused kernel builds (counts below 2^kTagShift). */
  public static final long FUSED_MAX_SLOTS = 1L << 22;

  /** Most blocks of the fused kernel ({@code kFusedMaxBlocks} in routing_map.cu). */
  static final long FUSED_MAX_BLOCKS = 512;

  /** Most experts of a batch whose maps the fused kernel builds ({@code kFusedMaxExperts}). */
  public static final int FUSED_MAX_EXPERTS = 768;

  /**
   * The fused kernel's {@code cap_mode} for {@link CapacityPolicy.Unlimited} ({@code kCapNone}).
   */
  static final int CAP_NONE = 0;

  /** {@code cap_mode} for {@link CapacityPolicy.PerExpert} ({@code kCapPerExpert}). */
  static final int CAP_PER_EXPERT = 1;

  /** {@code cap_mode} for {@link CapacityPolicy.NumOut} ({@code kCapNumOut}). */
  static final int CAP_NUM_OUT = 2;

  private final KernelModule module;
  private final DeviceCopies copies;

  RoutingMapLauncher(CudaDevice device, KernelTuning tuning) {
    this.module = new KernelModule(device, MODULE, tuning);
    this.copies = DeviceCopies.on(device);
  }

  /** The launcher on {@code device} with {@code tuning}. */
  public static RoutingMapLauncher on(CudaDevice device, KernelTuning tuning) {
    return new RoutingMapLauncher(device, tuning);
  }

  /** The device the pointers live on. */
  public CudaDevice device() {
    return module.device();
  }

  /**
   * The output buffers of {@link #buildMaps}, as device addresses.
   *
   * @param rowIdMap int32 {@code numTokens x topK}, written entirely ({@code -1}: masked or
   *     dropped)
   * @param srcToken int64 {@code numOut}, {@code -1} on padding rows
   * @param srcSlot int64 {@code numOut}, {@code -1} on padding rows
   * @param permutedProbs float32 {@code numOut} ({@code 0} on padding rows), or 0 without probs
   */
  public record MapOutputs(long rowIdMap, long srcToken, long srcSlot, long permutedProbs) {}

  /**
   * The fused kernel's encoding of a capacity policy: {@code cap_mode}, {@code cap} and {@code
   * pad_to_cap} as {@code moeprep_map_fused} reads them.
   */
  record FusedCapacity(int mode, long cap, boolean padToCap) {
    static FusedCapacity of(CapacityPolicy cap) {
      if (cap instanceof CapacityPolicy.PerExpert p) {
        return new FusedCapacity(CAP_PER_EXPERT, p.capacity(), p.padToCapacity());
      }
      if (cap instanceof CapacityPolicy.NumOut n) {
        return new FusedCapacity(CAP_NUM_OUT, n.numOut(), false);
      }
      return new FusedCapacity(CAP_NONE, 0, false);
    }
  }

  /**
   * Device and pinned host scratch for batches of {@code numTokens x topK} slots over {@code
   * numExperts} experts; reusable by later maps of the same shape on the same stream, so that a
   * pipeline allocates it once. Close it.
   */
  public RoutingScratch scratch(long numTokens, int topK, int numExperts) {
    return new RoutingScratch(device(), numTokens * topK, numExperts);
  }

  /**
   * Counts the valid local slots of each expert on the device (a counting sort by expert over
   * chunks of the flattened slots), waits for the {@code E} counts and computes the output layout
   * with {@link SegmentLayout#of}. Then {@link #buildMaps}. The plan must be closed.
   *
   * @param routing the batch's routing (its probs are used by {@link #buildMaps})
   * @param scratch from {@link #scratch} for this shape, or {@code null} to allocate one for this
   *     plan alone
   */
  public RoutingPlan plan(
      DeviceRouting routing, PermuteOptions options, RoutingScratch scratch, CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    int numExperts = options.numExperts();
    long slots = routing.slots();
    boolean owned = scratch == null;
    RoutingScratch sc = owned ? new RoutingScratch(device, slots, numExperts) : scratch;
    sc.requireShape(slots, numExperts);
    boolean[] local = options.localExperts();
    RoutingPlan plan = new RoutingPlan(sc, owned, routing, local);
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
        module.launch(
            sharedHist ? "moeprep_count_experts_shared" : "moeprep_count_experts_global",
            Math.min(sc.chunks, device.multiprocessors() * 8L),
            BLOCK,
            sharedHist ? numExperts * 4 : 0,
            s,
            routing.expertIds(),
            dev + RoutingScratch.maskAt(numExperts),
            slots,
            sc.chunkSlots,
            sc.chunks,
            numExperts,
            table);
        module.launch(
            "moeprep_scan_chunks",
            Math.min(numExperts, 65535),
            BLOCK,
            0,
            s,
            table,
            sc.chunks,
            numExperts,
            dev);
        copies.copyToHost(host, dev, 8L * numExperts, s);
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
        copies.copyToDevice(
            dev + RoutingScratch.keptAt(numExperts), at, 8L * (2L * numExperts + 1), s);
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
    device().synchronize(s); // a copy of the previous mask may still read the pinned region
    for (int e = 0; e < numExperts; e++) {
      u.putByte(sc.host.address() + at + e, (byte) (local[e] ? 1 : 0));
    }
    copies.copyToDevice(sc.device.address() + at, sc.host.address() + at, numExperts, s);
    sc.uploadedMask = local.clone();
  }

  /**
   * The layout, the row map and the source (token, slot and prob) of every output row, in the
   * stable (expert, token, slot) order. Batches of up to {@value #FUSED_MAX_SLOTS} slots over at
   * most {@value #FUSED_MAX_EXPERTS} experts take one cooperative kernel and one wait for {@code 2E
   * + 2} numbers (the sources go to scratch buffers sized by an upper bound of the output rows);
   * others, and all when {@link KernelTuning#fusedMap()} is off, take {@link #plan} and {@link
   * #buildMaps} into buffers of the exact size. Waits for the layout; the sources are complete in
   * stream order. Close the result.
   *
   * @param routing the batch's routing ({@code probs} 0: then {@link DeviceMaps#permutedProbs()} is
   *     0)
   * @param rowIdMap int32 {@code numTokens x topK}, the output, written entirely
   * @param scratch from {@link #scratch} for this shape, or {@code null} for one of this call
   */
  public DeviceMaps map(
      DeviceRouting routing,
      PermuteOptions options,
      long rowIdMap,
      RoutingScratch scratch,
      CUstream stream) {
    DeviceMaps maps = mapAsync(routing, options, rowIdMap, scratch, stream);
    try {
      maps.layout(); // waits
      return maps;
    } catch (RuntimeException | Error e) {
      maps.close();
      throw e;
    }
  }

  /** Whether {@link #mapAsync} takes the fused kernel for this batch. */
  boolean fuses(long slots, PermuteOptions options) {
    long bound = outputBound(slots, options);
    return slots > 0
        && slots <= FUSED_MAX_SLOTS
        && options.numExperts() <= FUSED_MAX_EXPERTS
        && bound < Integer.MAX_VALUE
        && bound <= 4 * slots + (1L << 20)
        && module.tuning().fusedMap();
  }

  /**
   * As {@link #map}, without waiting where the fused kernel applies: the row map and the sources
   * are queued on the stream (their addresses are valid at once), and {@link DeviceMaps#layout()}
   * waits for the layout when first asked. A pipeline that needs no output size before the data
   * kernel (no padding: capacity none or per expert unpadded, align 1, and outputs sized for the
   * worst case) thus runs without any host round trip. Close the result.
   */
  public DeviceMaps mapAsync(
      DeviceRouting routing,
      PermuteOptions options,
      long rowIdMap,
      RoutingScratch scratch,
      CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    int numExperts = options.numExperts();
    long slots = routing.slots();
    long probs = routing.probs();
    if (!fuses(slots, options)) {
      RoutingPlan plan = plan(routing, options, scratch, s);
      DeviceMaps maps = new DeviceMaps(plan.layout, plan);
      try {
        long numOut = plan.numOut();
        maps.own(numOut, probs != 0);
        buildMaps(
            plan, new MapOutputs(rowIdMap, maps.srcToken, maps.srcSlot, maps.permutedProbs), s);
        return maps;
      } catch (RuntimeException | Error e) {
        maps.close();
        throw e;
      }
    }
    long bound = outputBound(slots, options);
    boolean owned = scratch == null;
    RoutingScratch sc = owned ? new RoutingScratch(device, slots, numExperts) : scratch;
    try {
      sc.requireShape(slots, numExperts);
      boolean[] local = options.localExperts();
      uploadMask(sc, local, s);
      sc.prepareFused(module, bound, s);
      CapacityPolicy cap = options.capacity();
      FusedCapacity fc = FusedCapacity.of(cap);
      long dev = sc.device.address();
      long f = sc.fused.address();
      long seq = ++sc.fusedSeq;
      module.launchCooperative(
          "moeprep_map_fused",
          sc.fusedBlocks,
          BLOCK,
          fusedShared(numExperts),
          s,
          routing.expertIds(),
          dev + RoutingScratch.maskAt(numExperts),
          slots,
          routing.topK(),
          numExperts,
          fc.mode(),
          fc.cap(),
          fc.padToCap() ? 1 : 0,
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
   * apart), at most 4 x {@link LaunchGeometry#BLOCK} ({@code kFusedMaxStride} in routing_map.cu).
   */
  static int fusedStride(int numExperts) {
    int quads = Math.max(1, (numExperts + 3) / 4);
    return 4 * (quads == 1 ? 1 : Integer.highestOneBit(quads - 1) << 1);
  }

  /** Dynamic shared memory of moeprep_map_fused: kept, offsets, per-warp ranks, mask. */
  static int fusedShared(int numExperts) {
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
   * Writes the row map and the source of every output row of {@code plan}, in the stable (expert,
   * token, slot) order, with the prob of each when the plan's routing has probs. Call once per
   * plan.
   */
  public void buildMaps(RoutingPlan plan, MapOutputs out, CUstream stream) {
    CUstream s = DeviceCopies.orDefault(stream);
    CudaDevice device = device();
    device.makeCurrent();
    long numOut = plan.layout.numOut();
    RoutingScratch sc = plan.scratch;
    if (sc.chunks == 0 && numOut == 0) {
      return;
    }
    int numExperts = plan.local.length;
    long dev = sc.device.address();
    long probs = plan.routing.probs();
    // per-warp ranks, kept counts, offsets and the mask of the block in shared memory
    long sharedBytes = 8L * SCATTER_WARPS * numExperts + 16L * numExperts + 8 + numExperts;
    boolean sharedRanks = sharedBytes <= SHARED_LIMIT;
    module.launch(
        sharedRanks ? "moeprep_scatter_rows_shared" : "moeprep_scatter_rows_global",
        Math.max(
            1,
            Math.min(
                ceilDiv(Math.max(sc.chunks, numExperts + 1), SCATTER_WARPS),
                device.multiprocessors() * 16L)),
        SCATTER_WARPS * 32,
        sharedRanks ? (int) sharedBytes : 0,
        s,
        plan.routing.expertIds(),
        dev + RoutingScratch.maskAt(numExperts),
        plan.routing.slots(),
        plan.routing.topK(),
        sc.chunkSlots,
        sc.chunks,
        numExperts,
        dev + RoutingScratch.tableAt(numExperts),
        dev + RoutingScratch.keptAt(numExperts),
        dev + RoutingScratch.keptAt(numExperts) + 8L * numExperts,
        out.rowIdMap(),
        out.srcToken(),
        out.srcSlot(),
        probs,
        probs == 0 ? 0L : out.permutedProbs(),
        numOut);
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

    /**
     * The tagged table's row ({@link RoutingMapLauncher#fusedStride}), or 0 for the two-barrier
     * path.
     */
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

    /** Whether this scratch is for {@code slots} slots over {@code numExperts} experts. */
    public boolean fits(long slots, int numExperts) {
      return this.slots == slots && this.numExperts == numExperts;
    }

    /** Fails unless this scratch is for {@code slots} slots over {@code numExperts} experts. */
    void requireShape(long slots, int numExperts) {
      if (!fits(slots, numExperts)) {
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
    void prepareFused(KernelModule m, long bound, CUstream s) {
      CudaDevice d = m.device();
      if (fused == null) {
        long most = m.cooperativeBlocks("moeprep_map_fused", BLOCK, fusedShared(numExperts));
        if (most < 2) {
          throw new IllegalStateException("moeprep_map_fused cannot be resident on " + d);
        }
        // two blocks per multiprocessor where they fit, at least fusedMinBlockSlots slots each
        // (each warp walks its range in one or more steps of 256 slots), plus one block without
        // slots that publishes the result; the kernel's scan over blocks takes at most
        // FUSED_MAX_BLOCKS
        long blocks = Math.min(Math.min(most, 2L * d.multiprocessors()), FUSED_MAX_BLOCKS) - 1;
        long minSlots = m.tuning().fusedMinBlockSlots();
        blocks = Math.max(1, Math.min(blocks, slots / Math.max(1, minSlots)));
        fusedBlockSlots = ceilDiv(ceilDiv(slots, blocks), BLOCK) * BLOCK;
        fusedBlocks = ceilDiv(slots, fusedBlockSlots) + 1;
        int stride = fusedStride(numExperts);
        fusedTaggedStride =
            (fusedBlocks - 1) * stride <= m.tuning().fusedTaggedCells() ? stride : 0;
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
   * The maps of one permute from {@link RoutingMapLauncher#map}: the layout and the device
   * addresses of the source token, slot and prob of every output row (in the scratch, or in memory
   * this object owns). Valid until closed, or until the scratch serves the next batch. Close it.
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
      ownedMaps = DeviceBuffer.allocate(device(), numOut * (withProbs ? 20 : 16));
      srcToken = ownedMaps.address();
      srcSlot = srcToken + 8 * numOut;
      permutedProbs = withProbs ? srcToken + 16 * numOut : 0;
    }

    /**
     * The output layout; after {@link RoutingMapLauncher#mapAsync}, the first call waits for the
     * fused kernel's counts and checks its layout against {@link SegmentLayout}'s.
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
      device().makeCurrent();
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
                  + "): a kernel bug; the tuning's fusedMap = false avoids the fused kernel");
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
                + "): a kernel bug; the tuning's fusedMap = false avoids the fused kernel");
      }
      return layout;
    }
  }

  /**
   * The state between {@link RoutingMapLauncher#plan} and {@link RoutingMapLauncher#buildMaps}: the
   * layout, and the scratch of the counting sort (closed with the plan when the plan allocated it).
   * Close it.
   */
  public static final class RoutingPlan implements AutoCloseable {
    final RoutingScratch scratch;
    final boolean ownsScratch;
    final DeviceRouting routing;
    final boolean[] local;
    SegmentLayout layout;

    RoutingPlan(
        RoutingScratch scratch, boolean ownsScratch, DeviceRouting routing, boolean[] local) {
      this.scratch = scratch;
      this.ownsScratch = ownsScratch;
      this.routing = routing;
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
