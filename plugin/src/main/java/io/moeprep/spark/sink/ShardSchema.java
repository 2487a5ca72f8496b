package io.moeprep.spark.sink;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.types.DataTypes.BinaryType;
import static org.apache.spark.sql.types.DataTypes.IntegerType;
import static org.apache.spark.sql.types.DataTypes.LongType;
import static org.apache.spark.sql.types.DataTypes.StringType;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.MapType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * The input of the safetensors sink: {@link #SHARDS}, one or more rows ("parts") per (EP rank,
 * batch), which together hold the permute's result for that (rank, batch). Binary columns hold
 * little-endian elements in C order.
 *
 * <table>
 *   <caption>{@link #SHARDS}</caption>
 *   <tr><th>column</th><th>type</th><th>on</th><th>meaning</th></tr>
 *   <tr><td>{@code ep_rank}</td><td>int</td><td>every part</td><td>the EP rank, {@code >= 0}</td>
 *   <tr><td>{@code batch}</td><td>bigint</td><td>every part</td><td>the batch, {@code >= 0}</td>
 *   <tr><td>{@code part}</td><td>int</td><td>every part</td><td>{@code [0, parts)}</td>
 *   <tr><td>{@code parts}</td><td>int</td><td>every part</td><td>{@code >= 1}</td>
 *   <tr><td>{@code total_rows}</td><td>bigint</td><td>every part</td><td>output rows of the
 *       (rank, batch), padding included: {@code [0, 2^31)}</td>
 *   <tr><td>{@code tokens}</td><td>bigint</td><td>every part</td><td>{@code T}, the batch's tokens
 *       on this rank (rows of {@code row_id_map})</td>
 *   <tr><td>{@code hidden}</td><td>int</td><td>every part</td><td>{@code H >= 1}</td>
 *   <tr><td>{@code top_k}</td><td>int</td><td>every part</td><td>{@code K >= 1}</td>
 *   <tr><td>{@code num_experts}</td><td>int</td><td>every part</td><td>{@code E >= 1}, global</td>
 *   <tr><td>{@code dtype}</td><td>string</td><td>every part</td><td>{@code f32, bf16, f16,
 *       fp8e4m3, fp8e5m2}</td>
 *   <tr><td>{@code permuted}</td><td>binary</td><td>every part</td><td>this part's rows of the
 *       permuted tensor: {@code rows x H} elements</td>
 *   <tr><td>{@code source_token}</td><td>binary</td><td>every part</td><td>int64 per row of this
 *       part, {@code -1} on padding rows</td>
 *   <tr><td>{@code source_slot}</td><td>binary</td><td>every part</td><td>int64 per row, {@code
 *       -1} on padding rows</td>
 *   <tr><td>{@code permuted_probs}</td><td>binary, nullable</td><td>every part</td><td>float32 per
 *       row; null on every part when the permute had no probs</td>
 *   <tr><td>{@code row_id_map}</td><td>binary</td><td>part 0 (null later)</td><td>int32 {@code
 *       [T, K]}: output row of slot {@code (t, k)}, or {@code -1}</td>
 *   <tr><td>{@code tokens_per_expert}</td><td>binary</td><td>part 0</td><td>int64 {@code [E]}:
 *       kept rows per global expert</td>
 *   <tr><td>{@code expert_offsets}</td><td>binary</td><td>part 0</td><td>int64 {@code [E+1]}:
 *       segment starts, padding included</td>
 *   <tr><td>{@code token_id}</td><td>binary</td><td>part 0</td><td>int64 {@code [T]}: the ids of
 *       the batch's tokens on this rank, in {@code row_id_map}'s row order</td>
 *   <tr><td>{@code metadata}</td><td>map&lt;string,string&gt;</td><td>part 0</td><td>the spec:
 *       {@code ep_size} and {@code capacity} required, more keys allowed</td>
 * </table>
 *
 * <p>A part's row count is {@code permuted}'s length over {@code H x} the element size; the parts'
 * rows, in part order, are the (rank, batch)'s rows, and sum to {@code total_rows}. Parts exist so
 * that a (rank, batch) may exceed what one binary value holds (2 GiB): split it into as many parts
 * as needed. The parts of a (rank, batch) must arrive consecutively and in part order within one
 * Spark partition ({@link #inWriteOrder} arranges any DataFrame so); the columns {@code ep_rank} to
 * {@code dtype} repeat on every part with the same values. The columns may come in any order; none
 * may be missing or added.
 */
public final class ShardSchema {
  private ShardSchema() {}

  /** Column {@code ep_rank}: int. */
  public static final String EP_RANK = "ep_rank";

  /** Column {@code batch}: bigint. */
  public static final String BATCH = "batch";

  /** Column {@code part}: int. */
  public static final String PART = "part";

  /** Column {@code parts}: int. */
  public static final String PARTS = "parts";

  /** Column {@code total_rows}: bigint. */
  public static final String TOTAL_ROWS = "total_rows";

  /** Column {@code tokens}: bigint. */
  public static final String TOKENS = "tokens";

  /** Column {@code hidden}: int. */
  public static final String HIDDEN = "hidden";

  /** Column {@code top_k}: int. */
  public static final String TOP_K = "top_k";

  /** Column {@code num_experts}: int. */
  public static final String NUM_EXPERTS = "num_experts";

  /** Column {@code dtype}: string. */
  public static final String DTYPE = "dtype";

  /** Column and tensor {@code permuted}: binary. */
  public static final String PERMUTED = "permuted";

  /** Column and tensor {@code source_token}: binary. */
  public static final String SOURCE_TOKEN = "source_token";

  /** Column and tensor {@code source_slot}: binary. */
  public static final String SOURCE_SLOT = "source_slot";

  /** Column and tensor {@code permuted_probs}: binary, nullable. */
  public static final String PERMUTED_PROBS = "permuted_probs";

  /** Column and tensor {@code row_id_map}: binary, part 0. */
  public static final String ROW_ID_MAP = "row_id_map";

  /** Column and tensor {@code tokens_per_expert}: binary, part 0. */
  public static final String TOKENS_PER_EXPERT = "tokens_per_expert";

  /** Column and tensor {@code expert_offsets}: binary, part 0. */
  public static final String EXPERT_OFFSETS = "expert_offsets";

  /** Column and tensor {@code token_id}: binary, part 0. */
  public static final String TOKEN_ID = "token_id";

  /** Column {@code metadata}: map&lt;string,string&gt;, part 0. */
  public static final String METADATA = "metadata";

  /** The shard rows' schema (see the class comment); nullable columns are nullable here. */
  public static final StructType SHARDS =
      new StructType(
          new StructField[] {
            f(EP_RANK, IntegerType, false),
            f(BATCH, LongType, false),
            f(PART, IntegerType, false),
            f(PARTS, IntegerType, false),
            f(TOTAL_ROWS, LongType, false),
            f(TOKENS, LongType, false),
            f(HIDDEN, IntegerType, false),
            f(TOP_K, IntegerType, false),
            f(NUM_EXPERTS, IntegerType, false),
            f(DTYPE, StringType, false),
            f(PERMUTED, BinaryType, false),
            f(SOURCE_TOKEN, BinaryType, false),
            f(SOURCE_SLOT, BinaryType, false),
            f(PERMUTED_PROBS, BinaryType, true),
            f(ROW_ID_MAP, BinaryType, true),
            f(TOKENS_PER_EXPERT, BinaryType, true),
            f(EXPERT_OFFSETS, BinaryType, true),
            f(TOKEN_ID, BinaryType, true),
            f(METADATA, DataTypes.createMapType(StringType, StringType, false), true)
          });

  private static StructField f(String name, DataType t, boolean nullable) {
    return DataTypes.createStructField(name, t, nullable);
  }

  /**
   * The ordinal in {@code schema} of each {@link #SHARDS} column, in {@link #SHARDS}'s order.
   * Nullability is not compared (a DataFrame's columns are often nullable): nulls are checked per
   * row.
   *
   * @throws IllegalArgumentException naming every missing, extra or mistyped column
   */
  static int[] ordinals(StructType schema) {
    List<String> problems = new ArrayList<>();
    int[] ordinals = new int[SHARDS.size()];
    for (int i = 0; i < ordinals.length; i++) {
      StructField want = SHARDS.fields()[i];
      int at = indexOf(schema, want.name());
      ordinals[i] = at;
      if (at < 0) {
        problems.add("column " + want.name() + " is missing: must be " + sql(want.dataType()));
      } else if (!sameType(schema.fields()[at].dataType(), want.dataType())) {
        problems.add(
            "column "
                + want.name()
                + " has type "
                + sql(schema.fields()[at].dataType())
                + ": must be "
                + sql(want.dataType()));
      }
    }
    for (StructField f : schema.fields()) {
      if (indexOf(SHARDS, f.name()) < 0) {
        problems.add("column " + f.name() + " is not a shard column: remove it");
      }
    }
    if (!problems.isEmpty()) {
      throw new IllegalArgumentException(
          "the DataFrame is not in the shards schema (ShardSchema.SHARDS): "
              + String.join("; ", problems));
    }
    return ordinals;
  }

  private static int indexOf(StructType schema, String name) {
    StructField[] fields = schema.fields();
    int found = -1;
    for (int i = 0; i < fields.length; i++) {
      if (fields[i].name().equalsIgnoreCase(name)) {
        if (found >= 0) {
          throw new IllegalArgumentException(
              "column " + name + " appears twice in the DataFrame: it must appear once");
        }
        found = i;
      }
    }
    return found;
  }

  private static boolean sameType(DataType got, DataType want) {
    if (got instanceof MapType g && want instanceof MapType w) {
      return g.keyType().equals(w.keyType()) && g.valueType().equals(w.valueType());
    }
    return got.equals(want);
  }

  private static String sql(DataType t) {
    return t.sql().toLowerCase(Locale.ROOT);
  }

  /**
   * {@code shards} rearranged so that the sink accepts it: the parts of each (rank, batch) in one
   * partition, consecutive and in part order (a shuffle by {@code ep_rank, batch} and a sort within
   * partitions). Input that already arrives so needs none of this.
   */
  public static Dataset<Row> inWriteOrder(Dataset<Row> shards) {
    return shards
        .repartition(col(EP_RANK), col(BATCH))
        .sortWithinPartitions(col(EP_RANK), col(BATCH), col(PART));
  }
}
