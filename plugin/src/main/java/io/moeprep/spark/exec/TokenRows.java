package io.moeprep.spark.exec;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.spark.api.PermuteSpec;
import java.util.List;

/**
 * Reads and validates one input token row (columns in the order token_id, hidden, expert_ids,
 * probs, batch). Every failure names the token id: {@code token_id=42: expert_ids[3] = 300 is out
 * of range [0, 64) or -1}.
 */
final class TokenRows {
  private TokenRows() {}

  static final int TOKEN = 0;
  static final int HIDDEN = 1;
  static final int IDS = 2;
  static final int PROBS = 3;
  static final int BATCH = 4;

  static long tokenId(org.apache.spark.sql.Row r) {
    if (r.isNullAt(TOKEN)) {
      throw new IllegalArgumentException("token_id is null in row " + r.mkString("[", ", ", "]"));
    }
    long t = r.getLong(TOKEN);
    if (t < 0) {
      throw new IllegalArgumentException("token_id=" + t + ": token ids must be >= 0");
    }
    return t;
  }

  /** The hidden row as raw little-endian dtype bytes (converting {@code array<float>}). */
  static byte[] hidden(org.apache.spark.sql.Row r, long t, PermuteSpec spec) {
    if (r.isNullAt(HIDDEN)) {
      throw new IllegalArgumentException("token_id=" + t + ": hidden is null");
    }
    Object v = r.get(HIDDEN);
    int h = spec.hidden();
    DType d = spec.dtype();
    if (v instanceof byte[] b) {
      if (b.length != spec.rowBytes()) {
        throw new IllegalArgumentException(
            "token_id="
                + t
                + ": hidden has "
                + b.length
                + " bytes, expected "
                + spec.rowBytes()
                + " (hidden="
                + h
                + " x "
                + d.cliName()
                + ")");
      }
      return b;
    }
    List<Object> floats = r.getList(HIDDEN);
    if (floats.size() != h) {
      throw new IllegalArgumentException(
          "token_id=" + t + ": hidden has " + floats.size() + " elements, expected " + h);
    }
    byte[] out = new byte[(int) spec.rowBytes()];
    for (int i = 0; i < h; i++) {
      Object x = floats.get(i);
      if (x == null) {
        throw new IllegalArgumentException("token_id=" + t + ": hidden[" + i + "] is null");
      }
      float f = ((Number) x).floatValue();
      switch (d) {
        case F32 -> putInt(out, 4 * i, Numerics.f32Bits(f));
        case BF16 -> putShort(out, 2 * i, Numerics.floatToBf16(f));
        case F16 -> putShort(out, 2 * i, Numerics.floatToF16(f));
        default ->
            throw new IllegalArgumentException(
                "hidden as array<float> needs dtype f32, bf16 or f16, not " + d.cliName());
      }
    }
    return out;
  }

  /** The expert ids, checked against K and E. */
  static int[] expertIds(org.apache.spark.sql.Row r, long t, PermuteSpec spec) {
    if (r.isNullAt(IDS)) {
      throw new IllegalArgumentException("token_id=" + t + ": expert_ids is null");
    }
    List<Object> ids = r.getList(IDS);
    int k = spec.topK();
    if (ids.size() != k) {
      throw new IllegalArgumentException(
          "token_id=" + t + ": expert_ids has " + ids.size() + " entries, expected topK = " + k);
    }
    int e = spec.numExperts();
    int[] out = new int[k];
    for (int j = 0; j < k; j++) {
      Object x = ids.get(j);
      if (x == null) {
        throw new IllegalArgumentException("token_id=" + t + ": expert_ids[" + j + "] is null");
      }
      long v = ((Number) x).longValue();
      if (v < -1 || v >= e) {
        throw new IllegalArgumentException(
            "token_id="
                + t
                + ": expert_ids["
                + j
                + "] = "
                + v
                + " is out of range [0, "
                + e
                + ") or -1");
      }
      out[j] = (int) v;
    }
    return out;
  }

  /** The probs, or {@code null} when the row has none. */
  static float[] probs(org.apache.spark.sql.Row r, long t, PermuteSpec spec, boolean present) {
    if (!present) {
      return null;
    }
    if (r.isNullAt(PROBS)) {
      throw new IllegalArgumentException("token_id=" + t + ": probs is null");
    }
    List<Object> p = r.getList(PROBS);
    int k = spec.topK();
    if (p.size() != k) {
      throw new IllegalArgumentException(
          "token_id=" + t + ": probs has " + p.size() + " entries, expected topK = " + k);
    }
    float[] out = new float[k];
    for (int j = 0; j < k; j++) {
      Object x = p.get(j);
      if (x == null) {
        throw new IllegalArgumentException("token_id=" + t + ": probs[" + j + "] is null");
      }
      float f = ((Number) x).floatValue();
      if (Float.isNaN(f)) {
        throw new IllegalArgumentException("token_id=" + t + ": probs[" + j + "] is NaN");
      }
      out[j] = f;
    }
    return out;
  }

  static long batch(org.apache.spark.sql.Row r, long t, PermuteSpec spec, boolean present) {
    if (!present) {
      return t / spec.tokensPerBatch();
    }
    if (r.isNullAt(BATCH)) {
      throw new IllegalArgumentException("token_id=" + t + ": batch is null");
    }
    return r.getLong(BATCH);
  }

  /** One validated row. */
  record Parsed(long tokenId, int[] ids, byte[] hidden, float[] probs, long batch) {}

  /** Reads and validates every column of a row; throws naming the token id. */
  static Parsed parse(
      org.apache.spark.sql.Row r, PermuteSpec spec, boolean hasProbs, boolean hasBatch) {
    long t = tokenId(r);
    int[] ids = expertIds(r, t, spec);
    byte[] hidden = hidden(r, t, spec);
    float[] probs = probs(r, t, spec, hasProbs);
    long batch = batch(r, t, spec, hasBatch);
    return new Parsed(t, ids, hidden, probs, batch);
  }

  /**
   * The side-table row of a bad row ({@link io.moeprep.spark.api.Schemas#BAD_ROWS}): its token id
   * and batch where they can be read (else null), and the reason without the token id prefix.
   */
  static org.apache.spark.sql.Row badRow(
      org.apache.spark.sql.Row r, PermuteSpec spec, boolean hasBatch, IllegalArgumentException e) {
    Long t = r.isNullAt(TOKEN) ? null : r.getLong(TOKEN);
    Long batch;
    if (hasBatch) {
      batch = r.isNullAt(BATCH) ? null : r.getLong(BATCH);
    } else {
      batch = t == null || t < 0 ? null : t / spec.tokensPerBatch();
    }
    String reason = String.valueOf(e.getMessage());
    String prefix = "token_id=" + t + ": ";
    if (t != null && reason.startsWith(prefix)) {
      reason = reason.substring(prefix.length());
    }
    return org.apache.spark.sql.RowFactory.create(t, batch, reason);
  }

  private static void putShort(byte[] b, int at, short v) {
    b[at] = (byte) v;
    b[at + 1] = (byte) (v >>> 8);
  }

  private static void putInt(byte[] b, int at, int v) {
    b[at] = (byte) v;
    b[at + 1] = (byte) (v >>> 8);
    b[at + 2] = (byte) (v >>> 16);
    b[at + 3] = (byte) (v >>> 24);
  }
}
