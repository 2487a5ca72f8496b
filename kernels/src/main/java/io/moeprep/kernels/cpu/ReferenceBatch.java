package io.moeprep.kernels.cpu;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.List;

/**
 * The expected results for one batch of tokens: the batch copied into host buffers, and what the
 * CPU backend makes of it when run directly, with no Spark and no GPU. A verifier or a test
 * compares an output of one (rank, batch) with {@link #permute} for that rank's options, and a
 * combined batch with {@link #unpermute} or {@link #combineIdentity}.
 *
 * <p>Callers give the tokens in the order the Spark path uses for a batch: sorted by token id. The
 * batch owns its buffers and closes them in {@link #close()}; the results it returns belong to the
 * caller.
 */
public final class ReferenceBatch implements AutoCloseable {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  /**
   * One token.
   *
   * @param id its token id, for messages
   * @param hidden its {@code H} elements as little-endian bytes of the dtype ({@code
   *     dtype.rowBytes(H)} bytes)
   * @param expertIds its {@code K} expert ids, -1 for a masked slot
   * @param probs its {@code K} weights, or null for a batch without probs
   */
  public record Token(long id, byte[] hidden, int[] expertIds, float[] probs) {}

  private final HostBuffer tokens;
  private final HostBuffer routing;
  private final HostBuffer probs;
  private final PermuteInput input;

  private ReferenceBatch(HostBuffer tokens, HostBuffer routing, HostBuffer probs, PermuteInput in) {
    this.tokens = tokens;
    this.routing = routing;
    this.probs = probs;
    this.input = in;
  }

  /**
   * Copies {@code toks} into host buffers: tokens {@code [N, H]}, routing int32 {@code [N, K]} and,
   * with {@code withProbs}, probs float32 {@code [N, K]}.
   *
   * @throws IllegalArgumentException naming the token id when a token's hidden bytes, expert ids or
   *     probs do not have the sizes of {@code hidden}, {@code dtype} and {@code topK}
   */
  public static ReferenceBatch of(
      List<Token> toks, int hidden, DType dtype, int topK, boolean withProbs) {
    int n = toks.size();
    long rowBytes = dtype.rowBytes(hidden);
    for (Token tok : toks) {
      if (tok.hidden().length != rowBytes || tok.expertIds().length != topK) {
        throw new IllegalArgumentException(
            "token_id="
                + tok.id()
                + " has "
                + tok.hidden().length
                + " hidden bytes and "
                + tok.expertIds().length
                + " expert ids: expected "
                + rowBytes
                + " and "
                + topK);
      }
      if (withProbs && (tok.probs() == null || tok.probs().length != topK)) {
        throw new IllegalArgumentException(
            "token_id="
                + tok.id()
                + " has "
                + (tok.probs() == null ? "no probs" : tok.probs().length + " probs")
                + ": expected "
                + topK);
      }
    }
    long slots = (long) n * topK;
    HostBuffer t = HostBuffer.allocate(n * rowBytes);
    HostBuffer r = Closeables.closeOnExcept(() -> HostBuffer.allocate(4 * slots), t);
    HostBuffer p =
        withProbs ? Closeables.closeOnExcept(() -> HostBuffer.allocate(4 * slots), t, r) : null;
    return Closeables.closeOnExcept(
        () -> {
          for (int i = 0; i < n; i++) {
            Token tok = toks.get(i);
            t.copyFrom(i * rowBytes, tok.hidden(), 0, (int) rowBytes);
            for (int j = 0; j < topK; j++) {
              long at = 4L * ((long) i * topK + j);
              r.putInt(at, tok.expertIds()[j]);
              if (p != null) {
                p.putFloat(at, tok.probs()[j]);
              }
            }
          }
          return new ReferenceBatch(t, r, p, new PermuteInput(t, n, hidden, dtype, r, topK, p));
        },
        t,
        r,
        p);
  }

  /** The batch as the kernels' input. */
  public PermuteInput input() {
    return input;
  }

  /** The probs {@code [N, K]}, or null for a batch without probs. */
  public HostBuffer probs() {
    return probs;
  }

  /**
   * The expected permute of this batch with {@code options} (e.g. one rank's); closed by the
   * caller.
   */
  public PermuteResult permute(PermuteOptions options) {
    return CPU.permute(input, options);
  }

  /**
   * The expected single-device unpermute of {@code rows} expert-output rows {@code [rows, H]} of
   * this batch's dtype through {@code rowIdMap} (int32 {@code [N, K]}, -1 for no row), weighted by
   * this batch's probs (1 without): {@code [N, H]}, closed by the caller.
   */
  public HostBuffer unpermute(HostBuffer expertOut, long rows, HostBuffer rowIdMap) {
    return CPU.unpermute(
        new UnpermuteInput(
            expertOut,
            rows,
            rowIdMap,
            input.numTokens(),
            input.topK(),
            input.hidden(),
            input.dtype(),
            probs));
  }

  /**
   * The expected combine of identity experts over every rank: the permuted rows of {@code ranks}
   * (this batch's results, one per rank, in rank order) stacked, each slot mapped to its row there,
   * then {@link #unpermute}. {@code [N, H]}, closed by the caller.
   */
  public HostBuffer combineIdentity(List<PermuteResult> ranks) {
    long rowBytes = input.rowBytes();
    long slots = input.numSlots();
    long total = 0;
    for (PermuteResult r : ranks) {
      total += r.numOut();
    }
    try (HostBuffer stacked = HostBuffer.allocate(total * rowBytes);
        HostBuffer ids = HostBuffer.allocate(4L * slots)) {
      ids.fill(0, ids.size(), (byte) 0xFF);
      long base = 0;
      for (PermuteResult r : ranks) {
        stacked.copyFrom(base * rowBytes, r.permuted(), 0, r.numOut() * rowBytes);
        for (long s = 0; s < slots; s++) {
          int row = r.rowIdMap().getInt(4 * s);
          if (row >= 0) {
            ids.putInt(4 * s, (int) (base + row));
          }
        }
        base += r.numOut();
      }
      return unpermute(stacked, total, ids);
    }
  }

  /** The {@code rowBytes} bytes of row {@code i} of {@code buf}, a buffer of such rows. */
  public static byte[] row(HostBuffer buf, long i, long rowBytes) {
    byte[] out = new byte[Math.toIntExact(rowBytes)];
    buf.copyTo(i * rowBytes, out, 0, out.length);
    return out;
  }

  /** Closes the batch's buffers (not the results it returned). */
  @Override
  public void close() {
    Closeables.closeAll(tokens, routing, probs);
  }
}
