package io.moeprep.spark.exec;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.spark.spec.ProblemShape;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
  static byte[] hidden(org.apache.spark.sql.Row r, long t, ProblemShape spec) {
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
    ByteBuffer le = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < h; i++) {
      Object x = floats.get(i);
      if (x == null) {
        throw new IllegalArgumentException("token_id=" + t + ": hidden[" + i + "] is null");
      }
      float f = ((Number) x).floatValue();
      switch (d) {
        case F32 -> le.putInt(4 * i, Numerics.f32Bits(f));
        case BF16 -> le.putShort(2 * i, Numerics.floatToBf16(f));
        case F16 -> le.putShort(2 * i, Numerics.floatToF16(f));
        default ->
            throw new IllegalArgumentException(
                "hidden as array<float> needs dtype f32, bf16 or f16, not " + d.cliName());
      }
    }
    return out;
  }

  /** The expert ids, checked against K and E. */
  static int[] expertIds(org.apache.spark.sql.Row r, long t, ProblemShape spec) {
    int e = spec.numExperts();
    List<Object> ids = slots(r, IDS, "expert_ids", t, spec.topK());
    int[] out = new int[ids.size()];
    for (int j = 0; j < out.length; j++) {
      long v = slot(ids, j, "expert_ids", t).longValue();
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
  static float[] probs(org.apache.spark.sql.Row r, long t, ProblemShape spec, boolean present) {
    if (!present) {
      return null;
    }
    List<Object> p = slots(r, PROBS, "probs", t, spec.topK());
    float[] out = new float[p.size()];
    for (int j = 0; j < out.length; j++) {
      float f = slot(p, j, "probs", t).floatValue();
      if (Float.isNaN(f)) {
        throw new IllegalArgumentException("token_id=" + t + ": probs[" + j + "] is NaN");
      }
      out[j] = f;
    }
    return out;
  }

  /** The array column {@code name} of one token, checked to hold {@code K} entries. */
  private static List<Object> slots(
      org.apache.spark.sql.Row r, int field, String name, long t, int k) {
    if (r.isNullAt(field)) {
      throw new IllegalArgumentException("token_id=" + t + ": " + name + " is null");
    }
    List<Object> list = r.getList(field);
    if (list.size() != k) {
      throw new IllegalArgumentException(
          "token_id=" + t + ": " + name + " has " + list.size() + " entries, expected topK = " + k);
    }
    return list;
  }

  /** Entry {@code j} of the array column {@code name}, checked not to be null. */
  private static Number slot(List<Object> list, int j, String name, long t) {
    Object x = list.get(j);
    if (x == null) {
      throw new IllegalArgumentException("token_id=" + t + ": " + name + "[" + j + "] is null");
    }
    return (Number) x;
  }

  static long batch(org.apache.spark.sql.Row r, long t, ProblemShape spec, boolean present) {
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
      org.apache.spark.sql.Row r, ProblemShape spec, boolean hasProbs, boolean hasBatch) {
    long t = tokenId(r);
    int[] ids = expertIds(r, t, spec);
    byte[] hidden = hidden(r, t, spec);
    float[] probs = probs(r, t, spec, hasProbs);
    long batch = batch(r, t, spec, hasBatch);
    return new Parsed(t, ids, hidden, probs, batch);
  }

  /**
   * The side-table row of a bad row ({@link io.moeprep.spark.spec.Schemas#BAD_ROWS}): its token id
   * and batch where they can be read (else null), and the reason without the token id prefix.
   */
  static org.apache.spark.sql.Row badRow(
      org.apache.spark.sql.Row r, ProblemShape spec, boolean hasBatch, IllegalArgumentException e) {
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
}
