package io.moeprep.spark.api;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.size;

import io.moeprep.spark.exec.BadRowScanner;
import io.moeprep.spark.exec.BatchClustering;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.exec.CombineRunner;
import io.moeprep.spark.exec.DispatchMapper;
import io.moeprep.spark.exec.RankPartitioning;
import io.moeprep.spark.spec.BadRowPolicy;
import io.moeprep.spark.spec.Columns;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.util.Arrays;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.util.LongAccumulator;

/**
 * Expert-parallel permute (dispatch) and unpermute (combine) on DataFrames.
 *
 * <pre>{@code
 * PermuteSpec spec = PermuteSpec.builder(64, 8).hidden(1024, DType.BF16).topK(8).build();
 * PermuteOutput out = MoePrep.permute(tokens, spec);   // tokens: token_id, hidden, expert_ids[, probs][, batch]
 * out.data().write().parquet("permuted");               // one partition per rank
 * Dataset<Row> combined = MoePrep.unpermute(expertOutputs, out.rowMap(), spec);
 * }</pre>
 *
 * <p>Input rows are tokens: {@code token_id} (long, {@code >= 0}, unique within a batch), {@code
 * hidden} (binary of {@code H} little-endian dtype elements, or {@code array<float>} rounded to the
 * dtype), {@code expert_ids} ({@code array<int>} or {@code array<long>} of length K, each in {@code
 * [0, E)} or -1), optional {@code probs} ({@code array<float>} of length K), optional {@code batch}
 * (long; without it token {@code t} is in batch {@code t / tokensPerBatch}). Every row is validated
 * in the map tasks, before anything is emitted: a bad row fails the job with a message naming its
 * token id, or, under {@link BadRowPolicy#SKIP}, is left out, counted and listed in {@link
 * PermuteOutput#badRows()}. Within a batch, rows are permuted in token-id order, so the output
 * equals the single-device kernel run on the batch sorted by token id.
 */
public final class MoePrep {
  private MoePrep() {}

  /**
   * Parquet writer options for permuted data ({@code df.write().options(PARQUET_OPTIONS)}): no
   * dictionary (hidden rows never repeat) and a page-size check after every value (a PACKED block
   * is megabytes; Parquet's default checks every 100 values, buffering hundreds of MiB per page).
   * Measured here, they halve the time to write PACKED blocks.
   */
  public static final java.util.Map<String, String> PARQUET_OPTIONS =
      java.util.Map.of(
          "parquet.enable.dictionary", "false",
          "parquet.page.size.row.check.min", "1",
          "parquet.page.size.row.check.max", "2");

  /** Plans a permute; nothing runs until an output is used. */
  public static PermuteOutput permute(Dataset<Row> tokens, PermuteSpec spec) {
    SparkSession spark = tokens.sparkSession();
    PermuteSpec s = spec.resolve(k -> spark.conf().get(k, null));
    Columns c = s.columns();
    StructType schema = tokens.schema();
    Column tokenId = required(schema, c.tokenId()).cast(DataTypes.LongType);
    Column hidden = required(schema, c.hidden());
    DataType ht = schema.apply(c.hidden()).dataType();
    boolean floats =
        ht instanceof ArrayType a
            && (a.elementType() == DataTypes.FloatType || a.elementType() == DataTypes.DoubleType);
    if (!(ht == DataTypes.BinaryType || floats)) {
      throw new IllegalArgumentException(
          "column "
              + c.hidden()
              + " has type "
              + ht.simpleString()
              + ": must be binary or array<float>");
    }
    if (floats && s.shape().dtype().isFp8()) {
      throw new IllegalArgumentException(
          "column "
              + c.hidden()
              + " is array<float> but dtype "
              + s.shape().dtype().cliName()
              + " is copied as bytes, never converted: give it as binary");
    }
    Column ids = required(schema, c.expertIds());
    DataType it = schema.apply(c.expertIds()).dataType();
    if (!(it instanceof ArrayType a2
        && (a2.elementType() == DataTypes.IntegerType || a2.elementType() == DataTypes.LongType))) {
      throw new IllegalArgumentException(
          "column " + c.expertIds() + " has type " + it.simpleString() + ": must be array<int>");
    }
    boolean hasProbs = Arrays.asList(schema.fieldNames()).contains(c.probs());
    boolean hasBatch = Arrays.asList(schema.fieldNames()).contains(c.batch());
    ArrayType floatArray = DataTypes.createArrayType(DataTypes.FloatType);
    Column probs = hasProbs ? col(c.probs()).cast(floatArray) : lit(null).cast(floatArray);
    Column batch = hasBatch ? col(c.batch()).cast(DataTypes.LongType) : lit(null).cast("long");
    Dataset<Row> selected = tokens.select(tokenId, hidden, ids, probs, batch);
    int ranks = s.shape().expertPlacement().numRanks();
    boolean byBatch = s.settings().partitioning() == Partitioning.BATCH;
    boolean shuffle =
        !byBatch || !BatchClustering.holdsWholeBatches(tokens, hasBatch ? c.batch() : null);
    // the partitions of the shuffle: rank r in partition r, or batch b in partition b mod n
    int partitions = byBatch ? batchPartitions(spark, s) : ranks;
    int[] keys = RankPartitioning.keys(shuffle ? partitions : 1);
    LongAccumulator badRowCount = null;
    if (s.settings().badRows() == BadRowPolicy.SKIP) {
      badRowCount = spark.sparkContext().longAccumulator("moeprep.badRows");
    }
    Dataset<Row> dispatched =
        selected.mapPartitions(
            new DispatchMapper(s, hasProbs, hasBatch, keys, badRowCount),
            Encoders.row(Schemas.DISPATCH));
    if (shuffle) {
      dispatched = dispatched.repartition(partitions, col("pkey"));
    }
    dispatched = dispatched.sortWithinPartitions(col("batch"));
    Dataset<Row> badRows =
        selected.mapPartitions(
            new BadRowScanner(s, hasProbs, hasBatch), Encoders.row(Schemas.BAD_ROWS));
    BatchCounters counters =
        BatchCounters.register(spark.sparkContext(), "permute", s.settings().backend());
    return new PermuteOutput(
        dispatched, s, hasProbs, badRows, badRowCount, counters, selected, hasBatch);
  }

  /** Partitions of the shuffle by batch: the setting, or {@code spark.sql.shuffle.partitions}. */
  private static int batchPartitions(SparkSession spark, PermuteSpec s) {
    int p = s.settings().batchPartitions();
    return p > 0 ? p : Integer.parseInt(spark.conf().get("spark.sql.shuffle.partitions"));
  }

  /**
   * Combines expert outputs back to tokens: one row per token of the row map ({@link
   * Schemas#COMBINED}: {@code batch, token_id, hidden}), equal bit for bit to a single-device
   * unpermute of the same batch. Expert outputs come in either layout: {@link Schemas#ROWS}-like
   * rows ({@code batch, token_id, slot, prob, hidden}; padding rows with {@code token_id = -1} are
   * ignored) or {@link Schemas#PACKED}-like blocks ({@code batch, token_ids, slots, probs,
   * hidden}); {@code hidden} holds the expert output in the spec's dtype. The combine weights each
   * slot by its {@code prob} when the expert outputs carry probs (all or none of a batch), else by
   * 1.
   *
   * @param rowMap the permute's {@link PermuteOutput#rowMap()}: which tokens each batch has, and K
   */
  public static Dataset<Row> unpermute(
      Dataset<Row> expertOutputs, Dataset<Row> rowMap, PermuteSpec spec) {
    return unpermute(expertOutputs, rowMap, spec, null);
  }

  /**
   * {@link #unpermute(Dataset, Dataset, PermuteSpec)}, counting the combine's tokens, bytes and
   * batches in {@code counters} ({@link BatchCounters#register}, operation {@code unpermute}); with
   * {@code null}, the accumulators {@code moeprep.unpermute.*} are registered here.
   */
  public static Dataset<Row> unpermute(
      Dataset<Row> expertOutputs, Dataset<Row> rowMap, PermuteSpec spec, BatchCounters counters) {
    SparkSession spark = expertOutputs.sparkSession();
    PermuteSpec s = spec.resolve(k -> spark.conf().get(k, null));
    BatchCounters c0 =
        counters != null
            ? counters
            : BatchCounters.register(spark.sparkContext(), "unpermute", s.settings().backend());
    List<String> fields = Arrays.asList(expertOutputs.schema().fieldNames());
    Dataset<Row> slots;
    if (fields.contains("token_ids")) {
      boolean probs = fields.contains("probs");
      Dataset<Row> blocks =
          expertOutputs.select(
              col("batch").cast("long"),
              col("token_ids"),
              col("slots"),
              probs ? col("probs") : lit(null).cast("array<float>"),
              col("hidden"));
      slots =
          blocks.flatMap(
              (FlatMapFunction<Row, Row>) r -> explodeBlock(r, s.shape().rowBytes()),
              Encoders.row(Schemas.COMBINE_INPUT));
    } else {
      Column prob = fields.contains("prob") ? col("prob").cast("float") : lit(null).cast("float");
      slots =
          expertOutputs
              .where(col("token_id").geq(0))
              .select(
                  col("batch").cast("long").as("batch"),
                  col("token_id").cast("long").as("token_id"),
                  col("slot").cast("int").as("slot"),
                  lit(0).as("k"),
                  prob.as("prob"),
                  col("hidden").cast("binary").as("hidden"));
    }
    Dataset<Row> markers =
        rowMap.select(
            col("batch").cast("long").as("batch"),
            col("token_id").cast("long").as("token_id"),
            lit(-1).as("slot"),
            size(col("row_ids")).as("k"),
            lit(null).cast("float").as("prob"),
            lit(null).cast("binary").as("hidden"));
    Dataset<Row> all = markers.unionByName(slots);
    int partitions = s.settings().combinePartitions();
    Dataset<Row> byBatch =
        partitions > 0 ? all.repartition(partitions, col("batch")) : all.repartition(col("batch"));
    return byBatch
        .sortWithinPartitions(col("batch"), col("token_id"), col("slot"))
        .mapPartitions(new CombineRunner(s, c0), Encoders.row(Schemas.COMBINED));
  }

  private static java.util.Iterator<Row> explodeBlock(Row r, long rowBytes) {
    long batch = r.getLong(0);
    List<Object> tokens = r.getList(1);
    List<Object> slots = r.getList(2);
    List<Object> probs = r.isNullAt(3) ? null : r.getList(3);
    byte[] hidden = (byte[]) r.get(4);
    int rows = tokens.size();
    if (slots.size() != rows
        || (probs != null && probs.size() != rows)
        || hidden.length != rows * rowBytes) {
      throw new IllegalArgumentException(
          "batch "
              + batch
              + ": a packed block of "
              + rows
              + " token ids has "
              + slots.size()
              + " slots and "
              + hidden.length
              + " hidden bytes (expected "
              + rows * rowBytes
              + ")");
    }
    List<Row> out = new java.util.ArrayList<>(rows);
    for (int i = 0; i < rows; i++) {
      long t = ((Number) tokens.get(i)).longValue();
      if (t < 0) {
        continue; // padding row
      }
      byte[] h = Arrays.copyOfRange(hidden, (int) (i * rowBytes), (int) ((i + 1) * rowBytes));
      Float p = probs == null ? null : ((Number) probs.get(i)).floatValue();
      out.add(RowFactory.create(batch, t, ((Number) slots.get(i)).intValue(), 0, p, h));
    }
    return out.iterator();
  }

  private static Column required(StructType schema, String name) {
    if (!Arrays.asList(schema.fieldNames()).contains(name)) {
      throw new IllegalArgumentException(
          "column "
              + name
              + " is missing: the input has "
              + String.join(", ", schema.fieldNames())
              + " (set column names in PermuteSpec.Builder.columns)");
    }
    return col(name);
  }
}
