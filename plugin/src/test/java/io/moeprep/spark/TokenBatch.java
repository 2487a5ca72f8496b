package io.moeprep.spark;

import static org.apache.spark.sql.types.DataTypes.BinaryType;
import static org.apache.spark.sql.types.DataTypes.FloatType;
import static org.apache.spark.sql.types.DataTypes.IntegerType;
import static org.apache.spark.sql.types.DataTypes.LongType;
import static org.apache.spark.sql.types.DataTypes.createArrayType;
import static org.apache.spark.sql.types.DataTypes.createStructField;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.workload.SyntheticRouting;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/** Tokens of one or more batches for the Spark tests, and their DataFrame. */
public final class TokenBatch {
  /** One token. */
  public record Token(long id, long batch, byte[] hidden, int[] ids, float[] probs) {}

  public static final StructType SCHEMA =
      new StructType(
          new StructField[] {
            createStructField("token_id", LongType, false),
            createStructField("batch", LongType, false),
            createStructField("hidden", BinaryType, true),
            createStructField("expert_ids", createArrayType(IntegerType, true), true),
            createStructField("probs", createArrayType(FloatType, true), true)
          });

  public final List<Token> tokens;
  public final int hidden;
  public final DType dtype;
  public final int topK;
  public final int numExperts;

  public TokenBatch(List<Token> tokens, int hidden, DType dtype, int topK, int numExperts) {
    this.tokens = tokens;
    this.hidden = hidden;
    this.dtype = dtype;
    this.topK = topK;
    this.numExperts = numExperts;
  }

  /**
   * Random tokens: {@code batches} batches of {@code perBatch} tokens with shuffled, non-contiguous
   * ids, random bytes (NaNs included), no expert repeated within a token, -1 with {@code minus1}.
   */
  public static TokenBatch random(
      SplittableRandom rnd,
      int batches,
      int perBatch,
      int h,
      DType d,
      int k,
      int e,
      double minus1) {
    List<Token> out = new ArrayList<>();
    long id = 0;
    for (int b = 0; b < batches; b++) {
      for (int i = 0; i < perBatch; i++) {
        id += 1 + rnd.nextInt(3);
        byte[] hidden = new byte[h * d.bytes()];
        for (int x = 0; x < hidden.length; x++) {
          hidden[x] = (byte) rnd.nextInt();
        }
        int[] ids = new int[k];
        float[] probs = new float[k];
        SyntheticRouting.pickToken(rnd, new int[e], ids, probs, e, minus1);
        out.add(new Token(id, b, hidden, ids, probs));
      }
    }
    Collections.shuffle(out, new java.util.Random(rnd.nextLong()));
    return new TokenBatch(out, h, d, k, e);
  }

  /** The tokens as a DataFrame of {@link #SCHEMA}, spread over a few partitions. */
  public Dataset<Row> toDataFrame(SparkSession spark, boolean withProbs) {
    List<Row> rows = new ArrayList<>();
    for (Token t : tokens) {
      rows.add(
          RowFactory.create(
              t.id, t.batch, t.hidden, boxed(t.ids), t.probs == null ? null : boxed(t.probs)));
    }
    Dataset<Row> df = spark.createDataFrame(rows, SCHEMA).repartition(3);
    return withProbs ? df : df.drop("probs");
  }

  /** The tokens of batch {@code b}, sorted by token id. */
  public List<Token> batch(long b) {
    List<Token> out = new ArrayList<>();
    for (Token t : tokens) {
      if (t.batch == b) {
        out.add(t);
      }
    }
    out.sort(java.util.Comparator.comparingLong(Token::id));
    return out;
  }

  /** The batch ids, ascending. */
  public List<Long> batchIds() {
    return tokens.stream().map(Token::batch).distinct().sorted().toList();
  }

  public static List<Integer> boxed(int[] a) {
    List<Integer> l = new ArrayList<>();
    for (int x : a) {
      l.add(x);
    }
    return l;
  }

  public static List<Float> boxed(float[] a) {
    List<Float> l = new ArrayList<>();
    for (float x : a) {
      l.add(x);
    }
    return l;
  }
}
