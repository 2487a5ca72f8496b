package io.moeprep.spark.sink;

import static io.moeprep.spark.sink.ShardSchema.BATCH;
import static io.moeprep.spark.sink.ShardSchema.DTYPE;
import static io.moeprep.spark.sink.ShardSchema.EP_RANK;
import static io.moeprep.spark.sink.ShardSchema.EXPERT_OFFSETS;
import static io.moeprep.spark.sink.ShardSchema.HIDDEN;
import static io.moeprep.spark.sink.ShardSchema.METADATA;
import static io.moeprep.spark.sink.ShardSchema.NUM_EXPERTS;
import static io.moeprep.spark.sink.ShardSchema.PARTS;
import static io.moeprep.spark.sink.ShardSchema.PERMUTED_PROBS;
import static io.moeprep.spark.sink.ShardSchema.ROW_ID_MAP;
import static io.moeprep.spark.sink.ShardSchema.SOURCE_SLOT;
import static io.moeprep.spark.sink.ShardSchema.SOURCE_TOKEN;
import static io.moeprep.spark.sink.ShardSchema.TOKENS;
import static io.moeprep.spark.sink.ShardSchema.TOKENS_PER_EXPERT;
import static io.moeprep.spark.sink.ShardSchema.TOKEN_ID;
import static io.moeprep.spark.sink.ShardSchema.TOP_K;
import static io.moeprep.spark.sink.ShardSchema.TOTAL_ROWS;

import io.moeprep.kernels.DType;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Pattern;

/**
 * The checks of shard parts that need no more than the part itself (and part 0): the scalar
 * columns, the element type, the binary columns' sizes and the metadata. Each failure is an {@link
 * IllegalArgumentException} of the form {@code rank=R batch=B part=P: column C = V is invalid: must
 * be ...}.
 */
final class ShardChecks {
  /** The version of the file layout, in the metadata key {@link #LAYOUT_KEY}. */
  static final String LAYOUT_VERSION = "1";

  /** Metadata key of the layout version. */
  static final String LAYOUT_KEY = "moeprep_layout";

  /** Metadata key (from the input's metadata map, required) of the EP size. */
  static final String EP_SIZE_KEY = "ep_size";

  /** Metadata key (from the input's metadata map, required) of the capacity policy. */
  static final String CAPACITY_KEY = "capacity";

  private static final Pattern CAPACITY =
      Pattern.compile("none|(numout|perexpert|perexpertpadded):[0-9]+", Pattern.CASE_INSENSITIVE);

  private ShardChecks() {}

  /** What part 0 fixes for the whole (rank, batch). */
  record Spec(DType dtype, long rowBytes, boolean hasProbs, Map<String, String> metadata) {}

  /**
   * Checks part 0 of a (rank, batch): every scalar column, the element type, the sizes of the
   * part-0 tensors and the metadata; returns the element type and the file's metadata (the input's
   * map plus the keys taken from the columns).
   */
  static Spec first(ShardPart p) {
    String w = p.where();
    atLeast(w, EP_RANK, p.epRank(), 0);
    atLeast(w, BATCH, p.batch(), 0);
    atLeast(w, PARTS, p.parts(), 1);
    if (p.part() != 0) {
      throw new IllegalArgumentException(
          w + ": column part = " + p.part() + " is invalid: the first part must be part 0");
    }
    atLeast(w, TOTAL_ROWS, p.totalRows(), 0);
    if (p.totalRows() > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          w
              + ": column total_rows = "
              + p.totalRows()
              + " is invalid: must be < 2^31 (row ids are int32)");
    }
    atLeast(w, TOKENS, p.tokens(), 0);
    atLeast(w, HIDDEN, p.hidden(), 1);
    atLeast(w, TOP_K, p.topK(), 1);
    atLeast(w, NUM_EXPERTS, p.numExperts(), 1);
    DType dtype = dtype(p);
    size(w, ROW_ID_MAP, p.rowIdMap(), p.tokens(), 4L * p.topK(), "tokens x top_k x 4 (int32)");
    size(w, TOKENS_PER_EXPERT, p.tokensPerExpert(), p.numExperts(), 8, "num_experts x 8 (int64)");
    size(w, EXPERT_OFFSETS, p.expertOffsets(), p.numExperts() + 1L, 8, "(num_experts+1) x 8");
    size(w, TOKEN_ID, p.tokenId(), p.tokens(), 8, "tokens x 8 (int64)");
    return new Spec(
        dtype, dtype.rowBytes(p.hidden()), p.permutedProbs() != null, metadata(p, dtype));
  }

  /**
   * Checks that part {@code p} (not part 0) repeats part 0's scalar columns and leaves the part-0
   * columns null.
   */
  static void later(ShardPart p, ShardPart first) {
    String w = p.where();
    same(w, PARTS, p.parts(), first.parts());
    same(w, TOTAL_ROWS, p.totalRows(), first.totalRows());
    same(w, TOKENS, p.tokens(), first.tokens());
    same(w, HIDDEN, p.hidden(), first.hidden());
    same(w, TOP_K, p.topK(), first.topK());
    same(w, NUM_EXPERTS, p.numExperts(), first.numExperts());
    if (!p.dtype().equals(first.dtype())) {
      throw new IllegalArgumentException(
          w
              + ": column dtype = '"
              + p.dtype()
              + "' differs from part 0's '"
              + first.dtype()
              + "': the columns ep_rank to dtype must be equal on every part");
    }
    onlyOnFirst(w, ROW_ID_MAP, p.rowIdMap());
    onlyOnFirst(w, TOKENS_PER_EXPERT, p.tokensPerExpert());
    onlyOnFirst(w, EXPERT_OFFSETS, p.expertOffsets());
    onlyOnFirst(w, TOKEN_ID, p.tokenId());
    onlyOnFirst(w, METADATA, p.metadata());
  }

  /**
   * Checks the sizes of a part's per-row columns against its row count ({@code permuted}'s length
   * over the row size) and returns that count.
   */
  static long rows(ShardPart p, Spec spec) {
    String w = p.where();
    long rows = p.permuted().length() / spec.rowBytes();
    if (rows * spec.rowBytes() != p.permuted().length()) {
      throw new IllegalArgumentException(
          w
              + ": column permuted has "
              + p.permuted().length()
              + " bytes: must be a whole number of rows of hidden x "
              + spec.dtype().bytes()
              + " = "
              + spec.rowBytes()
              + " bytes ("
              + spec.dtype().cliName()
              + ")");
    }
    size(w, SOURCE_TOKEN, p.sourceToken(), rows, 8, "rows x 8 (int64), rows from permuted");
    size(w, SOURCE_SLOT, p.sourceSlot(), rows, 8, "rows x 8 (int64), rows from permuted");
    if ((p.permutedProbs() != null) != spec.hasProbs()) {
      throw new IllegalArgumentException(
          w
              + ": column permuted_probs is "
              + (p.permutedProbs() == null ? "null" : "set")
              + " but "
              + (spec.hasProbs() ? "set" : "null")
              + " on part 0: it must be set on every part or on none");
    }
    if (spec.hasProbs()) {
      size(w, PERMUTED_PROBS, p.permutedProbs(), rows, 4, "rows x 4 (float32)");
    }
    return rows;
  }

  private static DType dtype(ShardPart p) {
    try {
      return DType.parse(p.dtype());
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          p.where()
              + ": column dtype = '"
              + p.dtype()
              + "' is invalid: must be one of f32, bf16, f16, fp8e4m3, fp8e5m2",
          e);
    }
  }

  private static Map<String, String> metadata(ShardPart p, DType dtype) {
    String w = p.where();
    if (p.metadata() == null) {
      throw new IllegalArgumentException(
          w + ": column metadata is null: part 0 must carry the spec (ep_size, capacity, ...)");
    }
    Map<String, String> m = new TreeMap<>();
    for (Map.Entry<String, String> e : p.metadata().entrySet()) {
      if (e.getKey() == null || e.getKey().isEmpty() || e.getValue() == null) {
        throw new IllegalArgumentException(
            w
                + ": column metadata has the entry '"
                + e.getKey()
                + "' -> "
                + e.getValue()
                + ": keys must be non-empty and values non-null");
      }
      m.put(e.getKey(), e.getValue());
    }
    String epSize = m.get(EP_SIZE_KEY);
    long ranks;
    try {
      ranks = epSize == null ? -1 : Long.parseLong(epSize.trim());
    } catch (NumberFormatException e) {
      ranks = -1;
    }
    if (ranks < 1 || ranks <= p.epRank() || ranks > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          w
              + ": column metadata['ep_size'] = "
              + (epSize == null ? "(missing)" : "'" + epSize + "'")
              + " is invalid: must be an integer > ep_rank = "
              + p.epRank());
    }
    String capacity = m.get(CAPACITY_KEY);
    if (capacity == null || !CAPACITY.matcher(capacity.trim()).matches()) {
      throw new IllegalArgumentException(
          w
              + ": column metadata['capacity'] = "
              + (capacity == null ? "(missing)" : "'" + capacity + "'")
              + " is invalid: must be none, numOut:M, perExpert:C or perExpertPadded:C");
    }
    reserve(m, w, EP_RANK, Integer.toString(p.epRank()));
    reserve(m, w, BATCH, Long.toString(p.batch()));
    reserve(m, w, DTYPE, dtype.cliName());
    reserve(m, w, NUM_EXPERTS, Integer.toString(p.numExperts()));
    reserve(m, w, TOP_K, Integer.toString(p.topK()));
    reserve(m, w, HIDDEN, Integer.toString(p.hidden()));
    reserve(m, w, TOKENS, Long.toString(p.tokens()));
    reserve(m, w, TOTAL_ROWS, Long.toString(p.totalRows()));
    reserve(m, w, LAYOUT_KEY, LAYOUT_VERSION);
    return m;
  }

  /** Sets a key that the sink derives from the columns; the input may repeat it, not change it. */
  private static void reserve(Map<String, String> m, String w, String key, String value) {
    String old = m.put(key, value);
    if (old != null && !old.equals(value)) {
      throw new IllegalArgumentException(
          w
              + ": column metadata['"
              + key
              + "'] = '"
              + old
              + "' conflicts with the sink's value '"
              + value
              + "' (taken from the columns): drop the key or make it equal");
    }
  }

  private static void atLeast(String w, String column, long value, long min) {
    if (value < min) {
      throw new IllegalArgumentException(
          w + ": column " + column + " = " + value + " is invalid: must be >= " + min);
    }
  }

  private static void same(String w, String column, long value, long first) {
    if (value != first) {
      throw new IllegalArgumentException(
          w
              + ": column "
              + column
              + " = "
              + value
              + " differs from part 0's "
              + first
              + ": the columns ep_rank to dtype must be equal on every part");
    }
  }

  private static void onlyOnFirst(String w, String column, Object value) {
    if (value != null) {
      throw new IllegalArgumentException(
          w + ": column " + column + " is set: it belongs on part 0 only (null on later parts)");
    }
  }

  /** Checks that {@code bytes} holds {@code count} elements of {@code size} bytes. */
  private static void size(
      String w, String column, byte[] bytes, long count, long size, String rule) {
    if (bytes == null) {
      throw new IllegalArgumentException(
          w + ": column " + column + " is null: must be " + rule + " bytes");
    }
    long want = count > Long.MAX_VALUE / size ? -1 : count * size;
    if (bytes.length != want) {
      throw new IllegalArgumentException(
          w
              + ": column "
              + column
              + " has "
              + bytes.length
              + " bytes: must be "
              + rule
              + " = "
              + (want < 0 ? "more than 2^63" : Long.toString(want))
              + " bytes");
    }
  }
}
