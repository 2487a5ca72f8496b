package io.moeprep.spark.rapids;

import ai.rapids.cudf.BaseDeviceMemoryBuffer;
import ai.rapids.cudf.BinaryOp;
import ai.rapids.cudf.ColumnVector;
import ai.rapids.cudf.ColumnView;
import ai.rapids.cudf.Cuda;
import ai.rapids.cudf.DType;
import ai.rapids.cudf.DeviceMemoryBuffer;
import ai.rapids.cudf.DeviceMemoryBufferView;
import ai.rapids.cudf.HostMemoryBuffer;
import ai.rapids.cudf.OutOfBoundsPolicy;
import ai.rapids.cudf.Scalar;
import ai.rapids.cudf.Table;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.cuda.CudaDevice;
import io.moeprep.kernels.cuda.DeviceMoeKernels;
import io.moeprep.kernels.cuda.DeviceRouting;
import io.moeprep.kernels.cuda.DeviceRows;
import io.moeprep.kernels.cuda.PermuteLauncher;
import io.moeprep.kernels.cuda.RoutingMapLauncher;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.spark.exec.TokenOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Permutes one (rank, batch) held in cudf columns on the GPU, without copying the hidden data to
 * the host: the device addresses of the dispatched chunks' {@code hidden} and {@code expert_ids}
 * child buffers (BINARY columns, cudf LIST&lt;UINT8&gt;, holding packed bf16/f32/... rows and int32
 * ids) go straight to {@link DeviceMoeKernels}, the validated device-level entry of the kernels
 * (the contract's checks on the shapes, addresses and routing; the maps by the fused kernel where
 * it applies), which run on the calling thread's per-thread default stream (cudf's stream under
 * RAPIDS), on cudf's current device; every output buffer comes from RMM ({@link
 * DeviceMemoryBuffer#allocate}); the output is cudf tables.
 *
 * <p>Each output table holds consecutive output rows with the columns of {@link #COLUMNS} (the
 * {@code ROWS} layout: {@code ep_rank INT32, batch INT64, row INT32, expert INT32, local_expert
 * INT32, token_id INT64, slot INT32, prob FLOAT32 (null without probs), hidden LIST<UINT8>}). A
 * cudf LIST column has 32-bit offsets, so its child data must stay below 2^31 bytes: the permuted
 * rows are cut into several tables of at most {@code maxPieceBytes} hidden bytes each. The hidden
 * columns of all pieces are slices of one RMM buffer written by the permute kernel (no copy); only
 * the small per-row columns are built per piece.
 *
 * <p>Only metadata crosses the bus, never the hidden rows: the token ids (to order and check them),
 * the per-expert counts of the plan and the segment lengths; and, when the chunks of a batch do not
 * come in token order, the routing and probs (to reorder them) and the row map (to match the rows
 * where they lie).
 *
 * <p>The maps' device and pinned scratch is kept for the next batch of the same shape (one
 * allocation per shape, not per batch: freeing pinned or device memory waits for the whole GPU): a
 * permuter serves one thread and is closed by its owner.
 */
public final class CudfPermuter implements AutoCloseable {
  /** cudf's limit on the child data of one LIST column: 32-bit offsets. */
  public static final long CUDF_MAX_CHILD_BYTES = Integer.MAX_VALUE;

  /**
   * The columns of every output table, in order: those of the {@code ROWS} layout ({@code
   * Schemas.ROWS}), named here so that the cudf route loads no Spark class.
   */
  public static final List<String> COLUMNS =
      List.of(
          "ep_rank",
          "batch",
          "row",
          "expert",
          "local_expert",
          "token_id",
          "slot",
          "prob",
          "hidden");

  /** Index of the hidden column in the output tables. */
  public static final int HIDDEN_COLUMN = 8;

  private final int hidden;
  private final io.moeprep.kernels.DType dtype;
  private final int topK;
  private final long rowBytes;
  private final long maxPieceBytes;
  private final KernelTuning tuning;
  private final int taskDevice;
  private RoutingMapLauncher.RoutingScratch scratch;
  private int scratchDevice = -1;

  /**
   * As {@link #CudfPermuter(int, io.moeprep.kernels.DType, int, long, KernelTuning, int)} with the
   * shipped tuning and no task device.
   */
  public CudfPermuter(int hidden, io.moeprep.kernels.DType dtype, int topK, long maxPieceBytes) {
    this(hidden, dtype, topK, maxPieceBytes, KernelTuning.DEFAULT, -1);
  }

  /**
   * @param hidden elements per token
   * @param dtype element type of the hidden rows
   * @param topK slots per token
   * @param maxPieceBytes most hidden bytes in one output table, in {@code [rowBytes, 2^31 - 1]}
   *     ({@link #CUDF_MAX_CHILD_BYTES} in production; smaller in tests to force a split)
   * @param tuning the kernels' tuning (the job's)
   * @param taskDevice the GPU Spark assigned the task, or {@code -1}: when set, it must be cudf's
   *     current device (where the data lives)
   */
  public CudfPermuter(
      int hidden,
      io.moeprep.kernels.DType dtype,
      int topK,
      long maxPieceBytes,
      KernelTuning tuning,
      int taskDevice) {
    this.tuning = tuning;
    this.taskDevice = taskDevice;
    this.hidden = hidden;
    this.dtype = dtype;
    this.topK = topK;
    this.rowBytes = dtype.rowBytes(hidden);
    if (maxPieceBytes < rowBytes || maxPieceBytes > CUDF_MAX_CHILD_BYTES) {
      throw new IllegalArgumentException(
          "maxPieceBytes = "
              + maxPieceBytes
              + " is invalid: must be in ["
              + rowBytes
              + " (one row), "
              + CUDF_MAX_CHILD_BYTES
              + "] (cudf's 32-bit list offsets)");
    }
    this.maxPieceBytes = maxPieceBytes;
  }

  /** Output rows per table: as many whole rows as fit {@code maxPieceBytes}. */
  public long rowsPerPiece() {
    return maxPieceBytes / rowBytes;
  }

  /**
   * One batch's tokens on the device, as raw addresses of packed little-endian arrays (the child
   * data of the dispatched chunks): {@code tokenIds} int64 {@code n}, {@code expertIds} int32
   * {@code n x K} (masked to the rank), {@code probs} float32 {@code n x K} (0 when none, or when
   * {@code n = 0}), {@code hidden} {@code n x H} elements. The tokens may come in any order; the
   * permute is that of the batch sorted by token id. {@code hostIds}: the same token ids when the
   * caller has them on the host already, else null (they are read from {@code tokenIds}).
   */
  public record BatchBuffers(
      long tokenIds,
      long expertIds,
      long probs,
      long hidden,
      int numTokens,
      boolean withProbs,
      long[] hostIds) {
    /** Buffers whose token ids are read from the device. */
    public BatchBuffers(
        long tokenIds, long expertIds, long probs, long hidden, int numTokens, boolean withProbs) {
      this(tokenIds, expertIds, probs, hidden, numTokens, withProbs, null);
    }
  }

  /**
   * Permutes one (rank, batch). The caller owns the returned tables (close them); on failure
   * nothing is left allocated.
   *
   * @param localExperts the rank's global expert ids in local order ({@code local_expert} is the
   *     index in this array)
   * @return the output tables in row order; none when the batch has no output row
   */
  public List<Table> permute(
      BatchBuffers in, PermuteOptions options, int rank, long batch, int[] localExperts) {
    int n = in.numTokens();
    long k = topK;
    // token ids are metadata: read on the host, to sort and to check them
    long[] ids = in.hostIds() != null ? in.hostIds() : HostCopies.longs(in.tokenIds(), n);
    TokenOrder tokenOrder = TokenOrder.of(ids, batch);
    boolean sorted = tokenOrder.arrivedSorted();
    int[] order = tokenOrder.order();
    long[] sortedIds = tokenOrder.sortedIds();
    long probsIn = in.withProbs() ? in.probs() : 0;
    if (in.withProbs() && n > 0 && probsIn == 0) {
      throw new IllegalArgumentException("batch " + batch + ": probs expected but absent");
    }
    int device = Cuda.getDevice();
    if (taskDevice >= 0 && taskDevice != device) {
      throw new IllegalStateException(
          "rank "
              + rank
              + " batch "
              + batch
              + ": the task was assigned GPU "
              + taskDevice
              + " but cudf's current device, where its columns live, is "
              + device);
    }
    DeviceMoeKernels kernels = DeviceMoeKernels.on(device, tuning);
    List<Table> out = new ArrayList<>();
    try (Closeables.Scope owned = new Closeables.Scope()) {
      long numOut;
      SegmentLayout layout;
      boolean padding;
      DeviceMemoryBuffer permuted;
      ColumnVector srcToken;
      ColumnVector srcSlot;
      ColumnVector probs = null;
      // the kernels take the routing in token-id order, 4-byte aligned: reorder (or realign) the
      // small routing and probs arrays when the chunks do not give them so; never the hidden rows
      long routing = in.expertIds();
      long probsAt = probsIn;
      if (n > 0 && (!sorted || routing % 4 != 0 || probsAt % 4 != 0)) {
        routing = reordered(in.expertIds(), n, 4 * k, order, false, owned).getAddress();
        if (probsAt != 0) {
          probsAt = reordered(probsIn, n, 4 * k, order, false, owned).getAddress();
        }
      }
      DeviceMemoryBuffer rowIdMap = alloc(4L * n * k, owned);
      try (RoutingMapLauncher.DeviceMaps maps =
          kernels.map(
              new DeviceRouting(routing, probsAt, n, topK),
              options,
              rowIdMap.getAddress(),
              scratchFor(kernels, device, n, options.numExperts()),
              null)) {
        layout = maps.layout();
        numOut = maps.numOut();
        padding = maps.hasPadding();
        if (numOut == 0) {
          return out;
        }
        if (numOut > Integer.MAX_VALUE) {
          throw new IllegalArgumentException(
              "rank " + rank + " batch " + batch + ": " + numOut + " output rows exceed 2^31 - 1");
        }
        // the maps' sources live in the kernels' scratch: copy them (20 bytes a row) into RMM
        // buffers that the output columns own
        DeviceMemoryBuffer tokBuf = DeviceMemoryBuffer.allocate(8L * numOut);
        srcToken = own(column(DType.INT64, numOut, tokBuf), owned);
        DeviceMemoryBuffer slotBuf = DeviceMemoryBuffer.allocate(8L * numOut);
        srcSlot = own(column(DType.INT64, numOut, slotBuf), owned);
        kernels.copies().copy(tokBuf.getAddress(), maps.srcToken(), 8L * numOut, null);
        kernels.copies().copy(slotBuf.getAddress(), maps.srcSlot(), 8L * numOut, null);
        if (probsAt != 0) {
          DeviceMemoryBuffer probBuf = DeviceMemoryBuffer.allocate(4L * numOut);
          probs = own(column(DType.FLOAT32, numOut, probBuf), owned);
          kernels.copies().copy(probBuf.getAddress(), maps.permutedProbs(), 4L * numOut, null);
        }
        permuted = alloc(numOut * rowBytes, owned);
        long rowMap = rowIdMap.getAddress();
        if (!sorted) {
          // the hidden rows stay where the chunks put them: give the kernel the row map in that
          // order (row order[t] of the chunks is token t of the sorted batch)
          kernels.device().synchronize(CudaDevice.PER_THREAD_STREAM);
          rowMap = reordered(rowIdMap.getAddress(), n, 4 * k, order, true, owned).getAddress();
        }
        kernels.permuteRows(
            new PermuteLauncher.Rows(
                new DeviceRows(in.hidden(), n, hidden, dtype),
                topK,
                rowMap,
                tokBuf.getAddress(),
                new DeviceRows(permuted.getAddress(), numOut, hidden, dtype),
                padding),
            null);
        // the maps' scratch is freed on close: wait for the kernels and copies that read it
        kernels.device().synchronize(CudaDevice.PER_THREAD_STREAM);
      }
      int rows = (int) numOut;
      ColumnVector tokenIds = own(tokenIds(sortedIds, srcToken), owned);
      ColumnVector slots = own(srcSlot.castTo(DType.INT32), owned);
      ColumnVector prob;
      if (probs != null) {
        prob = probs;
      } else if (in.withProbs()) {
        // probs given but no token: every row is padding, with prob 0
        try (Scalar zero = Scalar.fromFloat(0f)) {
          prob = own(ColumnVector.fromScalar(zero, rows), owned);
        }
      } else {
        prob = own(nulls(DType.FLOAT32, rows), owned);
      }
      Table experts = own(expertColumns(layout, localExperts), owned);
      ColumnVector rowNo;
      ColumnVector rankCol;
      ColumnVector batchCol;
      try (Scalar zero = Scalar.fromInt(0);
          Scalar r = Scalar.fromInt(rank);
          Scalar b = Scalar.fromLong(batch)) {
        rowNo = own(ColumnVector.sequence(zero, rows), owned);
        rankCol = own(ColumnVector.fromScalar(r, rows), owned);
        batchCol = own(ColumnVector.fromScalar(b, rows), owned);
      }
      ColumnVector[] whole = {
        rankCol, batchCol, rowNo, experts.getColumn(0), experts.getColumn(1), tokenIds, slots, prob
      };
      long per = rowsPerPiece();
      for (long a = 0; a < numOut; a += per) {
        int from = (int) a;
        int to = (int) Math.min(numOut, a + per);
        out.add(piece(whole, permuted, from, to, from == 0 && to == rows));
      }
      Cuda.DEFAULT_STREAM.sync();
      return out;
    } catch (Throwable t) {
      // the caller gets nothing: the tables made so far go too (the scope has closed the rest)
      for (Table x : out) {
        Closeables.closeSuppressed(x, t);
      }
      throw t;
    }
  }

  /**
   * The scratch for maps of {@code n} tokens over {@code experts} experts on {@code device}: the
   * kept one when it fits, else a new one that replaces it; {@code null} without tokens.
   */
  private RoutingMapLauncher.RoutingScratch scratchFor(
      DeviceMoeKernels kernels, int device, int n, int experts) {
    if (n == 0) {
      return null;
    }
    if (scratch == null || scratchDevice != device || !scratch.fits((long) n * topK, experts)) {
      close();
      scratch = kernels.scratch(n, topK, experts);
      scratchDevice = device;
    }
    return scratch;
  }

  /** Frees the kept scratch (waiting for the device's work on it); the permuter stays usable. */
  @Override
  public void close() {
    RoutingMapLauncher.RoutingScratch s = scratch;
    scratch = null;
    scratchDevice = -1;
    if (s != null) {
      s.close();
    }
  }

  /** One output table: rows {@code [from, to)}; the hidden column is a slice of {@code data}. */
  private Table piece(
      ColumnVector[] whole, DeviceMemoryBuffer data, int from, int to, boolean all) {
    List<ColumnVector> cols = new ArrayList<>();
    // the table holds its own references: ours go when it is made
    try (Closeables.Scope refs = new Closeables.Scope()) {
      for (ColumnVector c : whole) {
        cols.add(refs.own(all ? c.incRefCount() : c.subVector(from, to)));
      }
      cols.add(refs.own(hiddenList(data, from, to)));
      return new Table(cols.toArray(new ColumnVector[0]));
    }
  }

  /**
   * A LIST&lt;UINT8&gt; column over rows {@code [from, to)} of the permuted buffer, sharing its
   * memory: the child is a slice of {@code data}, the offsets are {@code i * rowBytes}.
   */
  private ColumnVector hiddenList(DeviceMemoryBuffer data, int from, int to) {
    int rows = to - from;
    long bytes = rows * rowBytes;
    // the list takes the offsets and the slice over; they are closed here only on a failure
    return Closeables.closeOnExcept(
        DeviceMemoryBuffer.allocate(4L * (rows + 1)),
        offsets -> {
          try (Scalar zero = Scalar.fromInt(0);
              Scalar step = Scalar.fromInt((int) rowBytes);
              ColumnVector seq = ColumnVector.sequence(zero, step, rows + 1);
              BaseDeviceMemoryBuffer seqData = seq.getData()) {
            offsets.copyFromDeviceBufferAsync(0, seqData, 0, 4L * (rows + 1), Cuda.DEFAULT_STREAM);
          }
          return Closeables.closeOnExcept(
              data.slice(from * rowBytes, bytes),
              slice -> {
                try (ColumnView child =
                    new ColumnView(
                        DType.UINT8,
                        bytes,
                        Optional.of(0L),
                        slice,
                        (BaseDeviceMemoryBuffer) null)) {
                  return new ColumnVector(
                      DType.LIST,
                      rows,
                      Optional.of(0L),
                      null,
                      null,
                      offsets,
                      List.of(slice),
                      new long[] {child.getNativeView()});
                }
              });
        });
  }

  /** token_id of every output row: the sorted ids gathered by source token, -1 on padding. */
  private static ColumnVector tokenIds(long[] sortedIds, ColumnVector srcToken) {
    try (ColumnVector ids = ColumnVector.fromLongs(sortedIds);
        Table t = new Table(ids);
        Table gathered = t.gather(srcToken, OutOfBoundsPolicy.NULLIFY);
        Scalar zero = Scalar.fromLong(0);
        Scalar minusOne = Scalar.fromLong(-1);
        ColumnVector pad = srcToken.binaryOp(BinaryOp.LESS, zero, DType.BOOL8)) {
      // cudf wraps negative gather indices: padding rows are set explicitly
      return pad.ifElse(minusOne, gathered.getColumn(0));
    }
  }

  /**
   * A new RMM buffer of {@code n} rows of {@code rowBytes} from {@code src}, through the host
   * (these are routing-sized arrays, never hidden rows): row {@code t} is source row {@code
   * order[t]}, or with {@code scatter} row {@code order[t]} is source row {@code t}; {@code order
   * == null} keeps the order (a realigned copy).
   */
  private static DeviceMemoryBuffer reordered(
      long src, int n, long rowBytes, int[] order, boolean scatter, Closeables.Scope owned) {
    long bytes = n * rowBytes;
    DeviceMemoryBuffer dst = alloc(bytes, owned);
    try (HostMemoryBuffer a = HostMemoryBuffer.allocate(bytes);
        HostMemoryBuffer b = HostMemoryBuffer.allocate(bytes);
        DeviceMemoryBufferView s = new DeviceMemoryBufferView(src, bytes)) {
      a.copyFromDeviceBuffer(s);
      for (int t = 0; t < n; t++) {
        int o = order == null ? t : order[t];
        long from = (scatter ? t : o) * rowBytes;
        long to = (scatter ? o : t) * rowBytes;
        b.copyFromHostBuffer(to, a, from, rowBytes);
      }
      dst.copyFromHostBuffer(b);
    }
    return dst;
  }

  /**
   * expert and local_expert of every output row: each segment's owner ({@link
   * SegmentLayout#segmentExpert}) repeated by its length.
   */
  private static Table expertColumns(SegmentLayout l, int[] localExperts) {
    int[] local = new int[l.numExperts()];
    java.util.Arrays.fill(local, -1);
    for (int i = 0; i < localExperts.length; i++) {
      local[localExperts[i]] = i;
    }
    int segments = l.numSegments();
    int[] experts = new int[segments];
    int[] locals = new int[segments];
    int[] counts = new int[segments];
    for (int x = 0; x < segments; x++) {
      experts[x] = l.segmentExpert(x);
      locals[x] = experts[x] < 0 ? -1 : local[experts[x]];
      counts[x] = Math.toIntExact(l.segmentEnd(x) - l.segmentStart(x));
    }
    try (ColumnVector ex = ColumnVector.fromInts(experts);
        ColumnVector lo = ColumnVector.fromInts(locals);
        ColumnVector ct = ColumnVector.fromInts(counts);
        Table seg = new Table(ex, lo)) {
      return seg.repeat(ct);
    }
  }

  /** A column over {@code data}, which it takes over (closed here if the column fails). */
  private static ColumnVector column(DType type, long rows, DeviceMemoryBuffer data) {
    return Closeables.closeOnExcept(
        data, d -> new ColumnVector(type, rows, Optional.of(0L), d, null, null));
  }

  private static ColumnVector nulls(DType type, int rows) {
    try (Scalar s = Scalar.fromNull(type)) {
      return ColumnVector.fromScalar(s, rows);
    }
  }

  private static DeviceMemoryBuffer alloc(long bytes, Closeables.Scope owned) {
    return own(DeviceMemoryBuffer.allocate(Math.max(bytes, 1)), owned);
  }

  private static <T extends AutoCloseable> T own(T x, Closeables.Scope owned) {
    return owned.own(x);
  }
}
