package io.moeprep.kernels.cpu;

import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ChunkSortResult;
import io.moeprep.kernels.contract.KernelBackend;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.Arrays;
import sun.misc.Unsafe;

/**
 * The contract in plain Java on every core. Permute builds its row map with a parallel stable
 * counting sort by expert (no comparison sort), then copies each output row from its source token
 * (one read per kept slot, rows split across threads). Unpermute gathers and accumulates in float32
 * per token. All offsets are 64-bit.
 */
public final class CpuBackend implements KernelBackend {
  /** The one instance; stateless. */
  public static final CpuBackend INSTANCE = new CpuBackend();

  private static final Unsafe U = HostBuffer.unsafe();

  /** Tokens per chunk of the counting sort, at least. */
  private static final long SORT_GRAIN = 1024;

  /** Output rows per copy task, at least. */
  private static final long COPY_GRAIN = 64;

  private CpuBackend() {}

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
    long routing = addressOf(in.routing());

    // Pass 1: valid local slots per (token chunk, expert).
    int chunks = Math.max(1, CpuPool.chunkCount(n, SORT_GRAIN));
    long[][] counts = new long[chunks][numExperts];
    CpuPool.forChunks(
        n,
        chunks,
        (c, from, to) -> {
          long[] cnt = counts[c];
          for (long s = from * k, end = to * k; s < end; s++) {
            int e = U.getInt(routing + 4 * s);
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

    HostBuffer rowIdMap = null;
    HostBuffer srcToken = null;
    HostBuffer srcSlot = null;
    HostBuffer permuted = null;
    HostBuffer permutedProbs = null;
    try {
      rowIdMap = HostBuffer.allocate(n * k * 4);
      srcToken = HostBuffer.allocate(numOut * 8);
      srcSlot = HostBuffer.allocate(numOut * 8);
      srcToken.fill(0, numOut * 8, (byte) 0xFF);
      srcSlot.fill(0, numOut * 8, (byte) 0xFF);
      long map = addressOf(rowIdMap);
      long tok = addressOf(srcToken);
      long slot = addressOf(srcSlot);

      // Pass 2: stable scatter in (token, slot) order; a slot past its expert's kept count is
      // dropped and behaves like -1.
      CpuPool.forChunks(
          n,
          chunks,
          (c, from, to) -> {
            long[] rank = counts[c];
            for (long t = from; t < to; t++) {
              for (int j = 0; j < k; j++) {
                long s = t * k + j;
                int e = U.getInt(routing + 4 * s);
                int row = -1;
                if (e >= 0 && local[e]) {
                  long r = rank[e]++;
                  if (r < layout.kept(e)) {
                    long out = layout.offset(e) + r;
                    row = (int) out;
                    U.putLong(tok + 8 * out, t);
                    U.putLong(slot + 8 * out, j);
                  }
                }
                U.putInt(map + 4 * s, row);
              }
            }
          });

      long rowBytes = in.rowBytes();
      permuted = HostBuffer.allocate(numOut * rowBytes);
      long dst = addressOf(permuted);
      long src = addressOf(in.tokens());
      long probs = in.probs() == null ? 0 : addressOf(in.probs());
      if (in.probs() != null) {
        permutedProbs = HostBuffer.allocate(numOut * 4);
      }
      long pdst = addressOf(permutedProbs);
      boolean withProbs = in.probs() != null;
      CpuPool.forRange(
          numOut,
          COPY_GRAIN,
          (from, to) -> {
            for (long i = from; i < to; i++) {
              long t = U.getLong(tok + 8 * i);
              if (t >= 0) {
                U.copyMemory(src + t * rowBytes, dst + i * rowBytes, rowBytes);
              } else {
                U.setMemory(dst + i * rowBytes, rowBytes, (byte) 0);
              }
              if (withProbs) {
                float p = t >= 0 ? U.getFloat(probs + 4 * (t * k + U.getLong(slot + 8 * i))) : 0f;
                U.putFloat(pdst + 4 * i, p);
              }
            }
          });
      return new PermuteResult(
          permuted, rowIdMap, srcToken, srcSlot, permutedProbs, layout, in.dtype(), in.hidden());
    } catch (RuntimeException | Error e) {
      closeAll(rowIdMap, srcToken, srcSlot, permuted, permutedProbs);
      throw e;
    }
  }

  @Override
  public HostBuffer unpermute(UnpermuteInput in) {
    long n = in.numTokens();
    int k = in.topK();
    int h = in.hidden();
    long rowBytes = in.rowBytes();
    HostBuffer out = HostBuffer.allocate(n * rowBytes);
    try {
      long dst = addressOf(out);
      long src = addressOf(in.expertOut());
      long map = addressOf(in.rowIdMap());
      long probs = in.probs() == null ? 0 : addressOf(in.probs());
      boolean withProbs = in.probs() != null;
      var dtype = in.dtype();
      ThreadLocal<float[][]> scratch = ThreadLocal.withInitial(() -> new float[2][h]);
      ThreadLocal<Numerics.RowScratch> raw =
          ThreadLocal.withInitial(() -> new Numerics.RowScratch(h));
      CpuPool.forRange(
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
                int row = U.getInt(map + 4 * s);
                if (row < 0) {
                  continue;
                }
                float p = withProbs ? U.getFloat(probs + 4 * s) : 1f;
                Numerics.decodeRow(dtype, U, src + row * rowBytes, x, h, rs);
                for (int i = 0; i < h; i++) {
                  float prod = p * x[i];
                  acc[i] = acc[i] + prod;
                }
              }
              Numerics.encodeRow(dtype, U, acc, dst + t * rowBytes, h, rs);
            }
          });
      return out;
    } catch (RuntimeException | Error e) {
      out.close();
      throw e;
    }
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
    HostBuffer rows = null;
    HostBuffer probs = null;
    try {
      rows = HostBuffer.allocate(numRows * rowBytes);
      probs = in.probs() == null ? null : HostBuffer.allocate(numRows * 4);
      long dst = addressOf(rows);
      long src = addressOf(in.rows());
      long pdst = addressOf(probs);
      long psrc = in.probs() == null ? 0 : addressOf(in.probs());
      boolean withProbs = probs != null;
      CpuPool.forRange(
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
              U.copyMemory(src + s * rowBytes, dst + pos * rowBytes, (end - pos) * rowBytes);
              if (withProbs) {
                U.copyMemory(psrc + 4 * s, pdst + 4 * pos, 4 * (end - pos));
              }
              pos = end;
            }
          });
      return new ChunkSortResult(rows, probs);
    } catch (RuntimeException | Error e) {
      closeAll(rows, probs);
      throw e;
    }
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

  private static long addressOf(HostBuffer b) {
    return b == null || b.size() == 0 ? 0 : b.address();
  }

  private static void closeAll(HostBuffer... buffers) {
    for (HostBuffer b : buffers) {
      if (b != null) {
        b.close();
      }
    }
  }
}
