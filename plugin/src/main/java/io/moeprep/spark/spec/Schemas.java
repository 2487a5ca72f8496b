package io.moeprep.spark.spec;

import static org.apache.spark.sql.types.DataTypes.BinaryType;
import static org.apache.spark.sql.types.DataTypes.FloatType;
import static org.apache.spark.sql.types.DataTypes.IntegerType;
import static org.apache.spark.sql.types.DataTypes.LongType;
import static org.apache.spark.sql.types.DataTypes.StringType;
import static org.apache.spark.sql.types.DataTypes.createArrayType;
import static org.apache.spark.sql.types.DataTypes.createStructField;

import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/** The schemas of MoePrep's intermediate and output datasets. */
public final class Schemas {
  private Schemas() {}

  private static StructField f(String name, org.apache.spark.sql.types.DataType t, boolean nul) {
    return createStructField(name, t, nul);
  }

  /**
   * The bad-row side table of {@code PermuteOutput.badRows()}: the token id and batch of each input
   * row that failed validation (null where the row has none), and why.
   */
  public static final StructType BAD_ROWS =
      new StructType(
          new StructField[] {
            f("token_id", LongType, true),
            f("batch", LongType, true),
            f("reason", StringType, false)
          });

  /** The dispatched chunks, {@link DispatchChunk}'s wire format. */
  public static final StructType DISPATCH = DispatchChunk.schema();

  /** {@link Layout#ROWS}. {@code prob} is null without input probs; padding rows have -1 ids. */
  public static final StructType ROWS =
      new StructType(
          new StructField[] {
            f("ep_rank", IntegerType, false),
            f("batch", LongType, false),
            f("row", IntegerType, false),
            f("expert", IntegerType, false),
            f("local_expert", IntegerType, false),
            f("token_id", LongType, false),
            f("slot", IntegerType, false),
            f("prob", FloatType, true),
            f("hidden", BinaryType, false)
          });

  /**
   * {@link Layout#PACKED}: {@code row_offset} is the first row of this part within the (rank,
   * batch) output; {@code hidden} holds {@code rows x H} elements.
   */
  public static final StructType PACKED =
      new StructType(
          new StructField[] {
            f("ep_rank", IntegerType, false),
            f("batch", LongType, false),
            f("expert", IntegerType, false),
            f("local_expert", IntegerType, false),
            f("part", IntegerType, false),
            f("row_offset", LongType, false),
            f("rows", IntegerType, false),
            f("token_ids", createArrayType(LongType, false), false),
            f("slots", createArrayType(IntegerType, false), false),
            f("probs", createArrayType(FloatType, false), true),
            f("hidden", BinaryType, false)
          });

  /**
   * The row map per (rank, batch, token): {@code row_ids[k]} is the output row of slot k within the
   * (rank, batch) output, or -1 (masked, other rank, or dropped).
   */
  public static final StructType ROW_MAP =
      new StructType(
          new StructField[] {
            f("ep_rank", IntegerType, false),
            f("batch", LongType, false),
            f("token_id", LongType, false),
            f("row_ids", createArrayType(IntegerType, false), false)
          });

  /**
   * Tokens per expert per (rank, batch), for each local expert: kept and dropped slots, and the
   * (padded) segment {@code [row_offset, row_offset + rows)}.
   */
  public static final StructType TOKENS_PER_EXPERT =
      new StructType(
          new StructField[] {
            f("ep_rank", IntegerType, false),
            f("batch", LongType, false),
            f("expert", IntegerType, false),
            f("local_expert", IntegerType, false),
            f("kept", LongType, false),
            f("dropped", LongType, false),
            f("row_offset", LongType, false),
            f("rows", LongType, false)
          });

  /** One expert-output slot or one row-map marker ({@code slot = -1}, {@code k = K}). */
  public static final StructType COMBINE_INPUT =
      new StructType(
          new StructField[] {
            f("batch", LongType, false),
            f("token_id", LongType, false),
            f("slot", IntegerType, false),
            f("k", IntegerType, false),
            f("prob", FloatType, true),
            f("hidden", BinaryType, true)
          });

  /** Unpermute output: one combined hidden row per token. */
  public static final StructType COMBINED =
      new StructType(
          new StructField[] {
            f("batch", LongType, false),
            f("token_id", LongType, false),
            f("hidden", BinaryType, false)
          });
}
