package io.moeprep.kernels.cpu;

import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.Arrays;

/**
 * The contract in plain Java on the threads of a {@link CpuPool}. Permute builds its row map with a
 * parallel stable counting sort by expert (no comparison sort), then copies each output row from
 * its source token (one read per kept slot, rows split across threads). Unpermute gathers and
 * accumulates in float32 per token. All offsets are 64-bit. Stateless apart from its pool: one
 * instance serves any number of concurrent callers.
 */
public final class CpuBackend implements KernelBackend {
  /** The backend of {@link KernelTuning#DEFAULT}: one worker per core. */
  public static final CpuBackend INSTANCE = new CpuBackend(CpuPool.common());

  /** Tokens per chunk of the counting sort, at least. */
  private static final long SORT_GRAIN = 1024;

  /** Output rows per copy task, at least. */
  private static final long COPY_GRAIN = 64;

  private final CpuPool pool;

  private CpuBackend(CpuPool pool) {
    this.pool = pool;
  }

  /** The backend on {@code tuning.cpuThreads()} workers ({@link CpuPool#of}). */
  public static CpuBackend with(KernelTuning tuning) {
    return new CpuBackend(CpuPool.of(tuning.cpuThreads()));
  }

  /** The workers this backend runs on. */
  public CpuPool pool() {
    return pool;
  }

  @Override
  public String name() {
    return "cpu";
  }

  @Override
  public PermuteResult permute(PermuteInput in, PermuteOptions options) {
    long n = in.numTokens();
    int k = in.topK();
    int numExperts = options.numExperts();
    boolean[] local = options.localExperts();
    HostBuffer routing = in.routing();

    // Pass 1: valid local slots per (token chunk, expert).
    int chunks = Math.max(1, pool.chunkCount(n, SORT_GRAIN));
    long[][] counts = new long[chunks][numExperts];
    pool.forChunks(
        n,
        chunks,
        (c, from, to) -> {
          long[] cnt = counts[c];
          for (long s = from * k, end = to * k; s < end; s++) {
            int e = routing.getInt(4 * s);
            if (e >= 0 && local[e]) {
              cnt[e]++;
            }
          }
        });
    long[] valid = new long[numExperts];
    for (long[] cnt : counts) {
      for (int e = 0; e < numExperts; e++) {
        valid[e] += cnt[e];
      }
    }
    SegmentLayout layout = SegmentLayout.of(valid, local, options.capacity(), options.align());
    long numOut = layout.numOut();

    // Rank of each chunk's first slot within its expert: exclusive prefix over chunks.
    long[] running = new long[numExperts];
    for (long[] cnt : counts) {
      for (int e = 0; e < numExperts; e++) {
        long c = cnt[e];
        cnt[e] = running[e];
        running[e] += c;
      }
    }

    long rowBytes = in.rowBytes();
    boolean withProbs = in.probs() != null;
    HostBuffer rowIdMap = HostBuffer.allocate(n * k * 4);
    HostBuffer srcToken = Closeables.closeOnExcept(() -> HostBuffer.allocate(numOut * 8), rowIdMap);
    HostBuffer srcSlot =
        Closeables.closeOnExcept(() -> HostBuffer.allocate(numOut * 8), rowIdMap, srcToken);
    HostBuffer permuted =
        Closeables.closeOnExcept(
            () -> HostBuffer.allocate(numOut * rowBytes), rowIdMap, srcToken, srcSlot);
    HostBuffer permutedProbs =
        Closeables.closeOnExcept(
            () -> withProbs ? HostBuffer.allocate(numOut * 4) : null,
            rowIdMap,
            srcToken,
            srcSlot,
            permuted);
    PermuteResult result =
        new PermuteResult(
            permuted, rowIdMap, srcToken, srcSlot, permutedProbs, layout, in.dtype(), in.hidden());
    return Closeables.closeOnExcept(
        result,
        r -> {
          scatter(in, local, layout, counts, r);
          copyRows(in, r);
          return r;
        });
  }

  /**
   * Pass 2: the row map and the sources, a stable scatter in (token, slot) order per chunk of
   * tokens; a slot past its expert's kept count is dropped and behaves like -1.
   */
  private void scatter(
      PermuteInput in, boolean[] local, SegmentLayout layout, long[][] ranks, PermuteResult r) {
    long n = in.numTokens();
    int k = in.topK();
    long numOut = layout.numOut();
    HostBuffer routing = in.routing();
    HostBuffer map = r.rowIdMap();
    HostBuffer tok = r.sourceToken();
    HostBuffer slot = r.sourceSlot();
    tok.fill(0, numOut * 8, (byte) 0xFF);
    slot.fill(0, numOut * 8, (byte) 0xFF);
    pool.forChunks(
        n,
        ranks.length,
        (c, from, to) -> {
          long[] rank = ranks[c];
          for (long t = from; t < to; t++) {
            for (int j = 0; j < k; j++) {
              long s = t * k + j;
              int e = routing.getInt(4 * s);
              int row = -1;
              if (e >= 0 && local[e]) {
                long rk = rank[e]++;
                if (rk < layout.kept(e)) {
                  long out = layout.offset(e) + rk;
                  row = (int) out;
                  tok.putLong(8 * out, t);
                  slot.putLong(8 * out, j);
                }
              }
              map.putInt(4 * s, row);
            }
          }
        });
  }

  /** The output rows from their source tokens (zeros on padding), and their probs. */
  private void copyRows(PermuteInput in, PermuteResult r) {
    int k = in.topK();
    long rowBytes = in.rowBytes();
    HostBuffer tokens = in.tokens();
    HostBuffer probs = in.probs();
    HostBuffer tok = r.sourceToken();
    HostBuffer slot = r.sourceSlot();
    HostBuffer permuted = r.permuted();
    HostBuffer permutedProbs = r.permutedProbs();
    pool.forRange(
        r.numOut(),
        COPY_GRAIN,
        (from, to) -> {
          for (long i = from; i < to; i++) {
            long t = tok.getLong(8 * i);
            if (t >= 0) {
              permuted.copyFrom(i * rowBytes, tokens, t * rowBytes, rowBytes);
            } else {
              permuted.fill(i * rowBytes, rowBytes, (byte) 0);
            }
            if (probs != null) {
              float p = t >= 0 ? probs.getFloat(4 * (t * k + slot.getLong(8 * i))) : 0f;
              permutedProbs.putFloat(4 * i, p);
            }
          }
        });
  }

  @Override
  public HostBuffer unpermute(UnpermuteInput in) {
    long n = in.numTokens();
    int k = in.topK();
    int h = in.hidden();
    long rowBytes = in.rowBytes();
    HostBuffer expertOut = in.expertOut();
    HostBuffer map = in.rowIdMap();
    HostBuffer probs = in.probs();
    var dtype = in.dtype();
    ThreadLocal<float[][]> scratch = ThreadLocal.withInitial(() -> new float[2][h]);
    ThreadLocal<Numerics.RowScratch> raw =
        ThreadLocal.withInitial(() -> new Numerics.RowScratch(h));
    return Closeables.closeOnExcept(
        HostBuffer.allocate(n * rowBytes),
        out -> {
          pool.forRange(
              n,
              Math.max(1, (1 << 16) / h),
              (from, to) -> {
                float[][] bufs = scratch.get();
                float[] acc = bufs[0];
                float[] x = bufs[1];
                Numerics.RowScratch rs = raw.get();
                for (long t = from; t < to; t++) {
                  Arrays.fill(acc, 0f);
                  for (int j = 0; j < k; j++) {
                    long s = t * k + j;
                    int row = map.getInt(4 * s);
                    if (row < 0) {
                      continue;
                    }
                    float p = probs != null ? probs.getFloat(4 * s) : 1f;
                    Numerics.decodeRow(dtype, expertOut, row * rowBytes, x, h, rs);
                    for (int i = 0; i < h; i++) {
                      float prod = p * x[i];
                      acc[i] = acc[i] + prod;
                    }
                  }
                  Numerics.encodeRow(dtype, acc, out, t * rowBytes, h, rs);
                }
              });
          return out;
        });
  }

  @Override
  public ChunkSortResult chunkSort(ChunkSortInput in) {
    long[] srcOff = in.sourceOffsets();
    long[] sizes = in.splitSizes();
    int[] order = in.sortedIndex();
    long rowBytes = in.rowBytes();
    long numRows = in.numRows();
    // output offsets of the chunks in their new order
    long[] dstOff = new long[order.length + 1];
    for (int i = 0; i < order.length; i++) {
      dstOff[i + 1] = dstOff[i] + sizes[order[i]];
    }
    HostBuffer src = in.rows();
    HostBuffer psrc = in.probs();
    HostBuffer rows = HostBuffer.allocate(numRows * rowBytes);
    HostBuffer probs =
        Closeables.closeOnExcept(
            () -> psrc == null ? null : HostBuffer.allocate(numRows * 4), rows);
    return Closeables.closeOnExcept(
        new ChunkSortResult(rows, probs),
        r -> {
          pool.forRange(
              numRows,
              COPY_GRAIN,
              (from, to) -> {
                // copy [from, to) of the output as runs within one chunk each
                int i = upperBound(dstOff, from) - 1;
                long pos = from;
                while (pos < to) {
                  while (dstOff[i + 1] <= pos) {
                    i++;
                  }
                  long end = Math.min(to, dstOff[i + 1]);
                  long s = srcOff[order[i]] + (pos - dstOff[i]);
                  rows.copyFrom(pos * rowBytes, src, s * rowBytes, (end - pos) * rowBytes);
                  if (probs != null) {
                    probs.copyFrom(4 * pos, psrc, 4 * s, 4 * (end - pos));
                  }
                  pos = end;
                }
              });
          return r;
        });
  }

  /** Index of the first entry greater than {@code v} in the ascending array {@code a}. */
  private static int upperBound(long[] a, long v) {
    int lo = 0;
    int hi = a.length;
    while (lo < hi) {
      int mid = (lo + hi) >>> 1;
      if (a[mid] <= v) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  @Override
  public String toString() {
    return "CpuBackend[" + pool + "]";
  }
}
