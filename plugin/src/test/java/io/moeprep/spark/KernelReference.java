package io.moeprep.spark;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import java.util.List;

/** The expected results: the kernels' CPU backend run directly on one batch sorted by token id. */
public final class KernelReference {
  private KernelReference() {}

  public static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  /** Owns the input buffers of one batch. */
  public static final class Batch implements AutoCloseable {
    public final HostBuffer tokens;
    public final HostBuffer routing;
    public final HostBuffer probs;
    public final PermuteInput input;

    Batch(List<TokenBatch.Token> toks, int hidden, io.moeprep.kernels.DType d, int k, boolean p) {
      int n = toks.size();
      long rowBytes = (long) hidden * d.bytes();
      tokens = HostBuffer.allocate(n * rowBytes);
      routing = HostBuffer.allocate(4L * n * k);
      probs = p ? HostBuffer.allocate(4L * n * k) : null;
      for (int t = 0; t < n; t++) {
        TokenBatch.Token tok = toks.get(t);
        for (int x = 0; x < rowBytes; x++) {
          tokens.putByte(t * rowBytes + x, tok.hidden()[x]);
        }
        for (int j = 0; j < k; j++) {
          routing.putInt(4L * (t * k + j), tok.ids()[j]);
          if (p) {
            probs.putFloat(4L * (t * k + j), tok.probs()[j]);
          }
        }
      }
      input = new PermuteInput(tokens, n, hidden, d, routing, k, probs);
    }

    @Override
    public void close() {
      tokens.close();
      routing.close();
      if (probs != null) {
        probs.close();
      }
    }
  }

  public static Batch batch(TokenBatch tb, long b, boolean probs) {
    return new Batch(tb.batch(b), tb.hidden, tb.dtype, tb.topK, probs);
  }

  public static PermuteResult permute(Batch b, PermuteOptions o) {
    return CPU.permute(b.input, o);
  }

  /** Bytes of row {@code i} of a buffer of rows of {@code rowBytes}. */
  public static byte[] row(HostBuffer buf, long i, long rowBytes) {
    byte[] out = new byte[(int) rowBytes];
    for (int x = 0; x < rowBytes; x++) {
      out[x] = buf.getByte(i * rowBytes + x);
    }
    return out;
  }

  /** A single-device unpermute. */
  public static HostBuffer unpermute(UnpermuteInput in) {
    return CPU.unpermute(in);
  }
}
