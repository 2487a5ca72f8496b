package io.moeprep.spark.spec;

import static org.apache.spark.sql.types.DataTypes.BinaryType;
import static org.apache.spark.sql.types.DataTypes.IntegerType;
import static org.apache.spark.sql.types.DataTypes.LongType;
import static org.apache.spark.sql.types.DataTypes.createStructField;

import io.moeprep.kernels.memory.HostBuffer;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.Arrays;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * The dispatch wire format: a chunk of one batch's tokens on its way to one rank (the all-to-all
 * moves a few large records, not one per token), and its codec. Every place that writes or reads
 * dispatched rows goes through this record: the map side ({@link Writer}), the rank tasks ({@link
 * #of(Row)}, {@link #copyToken}), the RAPIDS route (the column positions and widths below, read on
 * the device) and {@link Schemas#DISPATCH}.
 *
 * <p>Columns, in order: {@code ep_rank} (the destination rank, or {@link #ALL_RANKS}), {@code pkey}
 * (the shuffle key that lands the chunk in partition {@code ep_rank}), {@code batch}, {@code n}
 * (tokens), and four little-endian packed columns: {@code token_ids} ({@code n} int64), {@code
 * expert_ids} ({@code n x K} int32, masked to the rank under ALL_TO_ALL with {@link
 * Partitioning#RANK}), {@code probs} ({@code n x K} float32, or null when the input has none),
 * {@code hidden} ({@code n x H} elements of the dtype). Token {@code i} of a chunk is entry {@code
 * i} of each packed column. A chunk with {@code n = 0} only says that the batch exists, so that its
 * rank permutes it.
 *
 * <p>The {@code int} constants are compile-time constants: code that must not load Spark classes
 * (the cudf route, run without Spark in its GPU test) reads them without loading this class.
 *
 * @param rank the destination EP rank, or {@link #ALL_RANKS}
 * @param partitionKey the shuffle key of {@code rank}
 * @param batch the batch of every token of the chunk
 * @param numTokens {@code n}
 * @param tokenIds {@code n} little-endian int64
 * @param expertIds {@code n x K} little-endian int32
 * @param probs {@code n x K} little-endian float32, or {@code null}
 * @param hidden {@code n} hidden rows
 */
public record DispatchChunk(
    int rank,
    int partitionKey,
    long batch,
    int numTokens,
    byte[] tokenIds,
    byte[] expertIds,
    byte[] probs,
    byte[] hidden) {

  /**
   * The {@code ep_rank} of a chunk bound for every rank ({@link Partitioning#BATCH}): its routing
   * is not masked, and the task that holds its batch permutes it for each rank.
   */
  public static final int ALL_RANKS = -1;

  /** Position of {@code ep_rank}. */
  public static final int RANK = 0;

  /** Position of {@code pkey}. */
  public static final int PKEY = 1;

  /** Position of {@code batch}. */
  public static final int BATCH = 2;

  /** Position of {@code n}. */
  public static final int N = 3;

  /** Position of {@code token_ids}. */
  public static final int TOKEN_IDS = 4;

  /** Position of {@code expert_ids}. */
  public static final int EXPERT_IDS = 5;

  /** Position of {@code probs}. */
  public static final int PROBS = 6;

  /** Position of {@code hidden}. */
  public static final int HIDDEN = 7;

  /** Bytes of one token id in {@code token_ids}. */
  public static final int TOKEN_ID_BYTES = 8;

  /** Bytes of one expert id (per slot) in {@code expert_ids}. */
  public static final int EXPERT_ID_BYTES = 4;

  /** Bytes of one prob (per slot) in {@code probs}. */
  public static final int PROB_BYTES = 4;

  private static final VarHandle LONGS =
      MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
  private static final VarHandle INTS =
      MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

  /** The Spark schema of the dispatched rows (built once, on first use). */
  public static StructType schema() {
    return SchemaHolder.SCHEMA;
  }

  /** Reads a dispatched row. */
  public static DispatchChunk of(Row r) {
    return new DispatchChunk(
        r.getInt(RANK),
        r.getInt(PKEY),
        r.getLong(BATCH),
        r.getInt(N),
        (byte[]) r.get(TOKEN_IDS),
        (byte[]) r.get(EXPERT_IDS),
        r.isNullAt(PROBS) ? null : (byte[]) r.get(PROBS),
        (byte[]) r.get(HIDDEN));
  }

  /** The batch of a dispatched row, without reading the rest. */
  public static long batchOf(Row r) {
    return r.getLong(BATCH);
  }

  /** This chunk as a row of {@link #schema()}. */
  public Row toRow() {
    return RowFactory.create(
        rank, partitionKey, batch, numTokens, tokenIds, expertIds, probs, hidden);
  }

  /** The id of token {@code i}. */
  public long tokenId(int i) {
    return (long) LONGS.get(tokenIds, TOKEN_ID_BYTES * i);
  }

  /**
   * Copies token {@code i} into row {@code t} of a batch's kernel inputs: its hidden row into
   * {@code tokens}, its {@code K} expert ids into {@code routing}, and its {@code K} probs into
   * {@code probs} when both this chunk and the call have them.
   */
  public void copyToken(
      int i,
      int topK,
      long rowBytes,
      HostBuffer tokens,
      HostBuffer routing,
      HostBuffer probs,
      long t) {
    long slots = (long) EXPERT_ID_BYTES * topK;
    tokens.copyFrom(t * rowBytes, hidden, i * rowBytes, rowBytes);
    routing.copyFrom(t * slots, expertIds, i * slots, slots);
    if (probs != null && this.probs != null) {
      probs.copyFrom(t * slots, this.probs, i * slots, slots);
    }
  }

  @Override
  public String toString() {
    return "DispatchChunk[rank="
        + rank
        + ", batch="
        + batch
        + ", n="
        + numTokens
        + ", hidden bytes="
        + hidden.length
        + "]";
  }

  /**
   * Packs the tokens of one (rank, batch) into a chunk, one token at a time: the map side's half of
   * the codec. The arrays grow by doubling; the hidden array grows to exactly a full chunk, so that
   * a full chunk is shipped without a copy.
   */
  public static final class Writer {
    private final int rank;
    private final int partitionKey;
    private final long batch;
    private final int topK;
    private final long rowBytes;
    private final int fullTokens;
    private int n;
    private byte[] tokenIds = new byte[TOKEN_ID_BYTES * 16];
    private byte[] ids;
    private byte[] probs;
    private byte[] hidden;
    private int hiddenLen;

    /**
     * @param initialTokens tokens the hidden array first holds
     * @param fullTokens tokens of a full chunk (the hidden array never grows past them)
     * @param withProbs whether the tokens carry probs
     */
    public Writer(
        int rank,
        int partitionKey,
        long batch,
        int topK,
        long rowBytes,
        boolean withProbs,
        int initialTokens,
        int fullTokens) {
      this.rank = rank;
      this.partitionKey = partitionKey;
      this.batch = batch;
      this.topK = topK;
      this.rowBytes = rowBytes;
      this.fullTokens = fullTokens;
      this.ids = new byte[EXPERT_ID_BYTES * topK * 16];
      this.probs = withProbs ? new byte[PROB_BYTES * topK * 16] : null;
      this.hidden = new byte[(int) (initialTokens * rowBytes)];
    }

    /** Tokens added so far. */
    public int tokens() {
      return n;
    }

    /** Hidden bytes added so far. */
    public int hiddenBytes() {
      return hiddenLen;
    }

    /** The batch of this chunk. */
    public long batch() {
      return batch;
    }

    /** The destination rank of this chunk. */
    public int rank() {
      return rank;
    }

    /**
     * Adds a token: its id, {@code K} expert ids (already masked to the rank), {@code K} probs (or
     * null when the chunk has none) and its hidden row.
     */
    public void add(long token, int[] routing, float[] p, byte[] h) {
      if ((n + 1) * TOKEN_ID_BYTES > tokenIds.length) {
        tokenIds = Arrays.copyOf(tokenIds, tokenIds.length * 2);
        ids = Arrays.copyOf(ids, ids.length * 2);
        if (probs != null) {
          probs = Arrays.copyOf(probs, probs.length * 2);
        }
      }
      if (hiddenLen + h.length > hidden.length) {
        long full = fullTokens * rowBytes;
        hidden =
            Arrays.copyOf(
                hidden, (int) Math.min(full, Math.max(2L * hidden.length, hiddenLen + h.length)));
      }
      LONGS.set(tokenIds, TOKEN_ID_BYTES * n, token);
      for (int j = 0; j < topK; j++) {
        INTS.set(ids, EXPERT_ID_BYTES * (n * topK + j), routing[j]);
        if (probs != null) {
          INTS.set(probs, PROB_BYTES * (n * topK + j), Float.floatToRawIntBits(p[j]));
        }
      }
      System.arraycopy(h, 0, hidden, hiddenLen, h.length);
      hiddenLen += h.length;
      n++;
    }

    /** The chunk of the tokens added (the arrays trimmed to them). */
    public DispatchChunk finish() {
      return new DispatchChunk(
          rank,
          partitionKey,
          batch,
          n,
          Arrays.copyOf(tokenIds, TOKEN_ID_BYTES * n),
          Arrays.copyOf(ids, EXPERT_ID_BYTES * n * topK),
          probs == null ? null : Arrays.copyOf(probs, PROB_BYTES * n * topK),
          hiddenLen == hidden.length ? hidden : Arrays.copyOf(hidden, hiddenLen));
    }
  }

  /** Builds the schema on first use only, so that the constants need no Spark class. */
  private static final class SchemaHolder {
    static final StructType SCHEMA =
        new StructType(
            new StructField[] {
              createStructField("ep_rank", IntegerType, false),
              createStructField("pkey", IntegerType, false),
              createStructField("batch", LongType, false),
              createStructField("n", IntegerType, false),
              createStructField("token_ids", BinaryType, false),
              createStructField("expert_ids", BinaryType, false),
              createStructField("probs", BinaryType, true),
              createStructField("hidden", BinaryType, false)
            });
  }
}
