package io.moeprep.app.job;

import static org.apache.spark.sql.types.DataTypes.BinaryType;
import static org.apache.spark.sql.types.DataTypes.FloatType;
import static org.apache.spark.sql.types.DataTypes.IntegerType;
import static org.apache.spark.sql.types.DataTypes.LongType;
import static org.apache.spark.sql.types.DataTypes.createArrayType;
import static org.apache.spark.sql.types.DataTypes.createStructField;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.Numerics;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.SplittableRandom;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * Generates the synthetic token table, one slice of token ids per Spark partition. Token {@code t}
 * draws everything from its own random stream, seeded by {@code (seed, t)}: the table depends on
 * the seed only, not on the partition count. Its hidden row is {@code H} standard normal values
 * rounded to the dtype (FP8: random finite bytes); the router reads the first {@link
 * Router#FEATURES} of these values (drawn from the same stream when {@code H} is smaller).
 */
public final class TokenGenerator implements MapPartitionsFunction<Long, Row> {
  private static final long serialVersionUID = 1L;

  /** The generated table: {@code token_id, batch, hidden, expert_ids, probs}. */
  public static final StructType SCHEMA =
      new StructType(
          new StructField[] {
            createStructField("token_id", LongType, false),
            createStructField("batch", LongType, false),
            createStructField("hidden", BinaryType, false),
            createStructField("expert_ids", createArrayType(IntegerType, false), false),
            createStructField("probs", createArrayType(FloatType, false), false)
          });

  private final long numTokens;
  private final int partitions;
  private final int hidden;
  private final DType dtype;
  private final int tokensPerBatch;
  private final Router router;
  private final long seed;

  public TokenGenerator(
      long numTokens,
      int partitions,
      int hidden,
      DType dtype,
      int tokensPerBatch,
      Router router,
      long seed) {
    this.numTokens = numTokens;
    this.partitions = partitions;
    this.hidden = hidden;
    this.dtype = dtype;
    this.tokensPerBatch = tokensPerBatch;
    this.router = router;
    this.seed = seed;
  }

  /** First token id of partition {@code p}. */
  long start(long p) {
    return numTokens * p / partitions;
  }

  @Override
  public Iterator<Row> call(Iterator<Long> in) {
    if (!in.hasNext()) {
      return java.util.Collections.emptyIterator();
    }
    long p = in.next();
    long from = start(p);
    long to = start(p + 1);
    return new Iterator<>() {
      long t = from;

      @Override
      public boolean hasNext() {
        return t < to;
      }

      @Override
      public Row next() {
        if (t >= to) {
          throw new NoSuchElementException();
        }
        return token(t++);
      }
    };
  }

  /** Token {@code t}'s row. */
  public Row token(long t) {
    SplittableRandom rnd = new SplittableRandom(mix(seed) ^ mix(t + 0x632BE59BD9B4E019L));
    int k = router.topK();
    float[] features = new float[Router.FEATURES];
    byte[] bytes = new byte[Math.toIntExact(dtype.rowBytes(hidden))];
    for (int i = 0; i < Math.max(hidden, Router.FEATURES); i++) {
      float v = (float) gaussian(rnd);
      if (i < Router.FEATURES) {
        features[i] = v;
      }
      if (i < hidden) {
        put(bytes, i, v, rnd);
      }
    }
    int[] ids = new int[k];
    float[] probs = new float[k];
    router.route(features, ids, probs);
    return RowFactory.create(t, t / tokensPerBatch, bytes, ids, probs);
  }

  private void put(byte[] b, int i, float v, SplittableRandom rnd) {
    switch (dtype) {
      case F32 -> {
        int bits = Float.floatToRawIntBits(v);
        b[4 * i] = (byte) bits;
        b[4 * i + 1] = (byte) (bits >>> 8);
        b[4 * i + 2] = (byte) (bits >>> 16);
        b[4 * i + 3] = (byte) (bits >>> 24);
      }
      case BF16, F16 -> {
        short s = dtype == DType.BF16 ? Numerics.floatToBf16(v) : Numerics.floatToF16(v);
        b[2 * i] = (byte) s;
        b[2 * i + 1] = (byte) (s >>> 8);
      }
      case FP8_E4M3 -> {
        int x = rnd.nextInt(256);
        b[i] = (byte) ((x & 0x7F) == 0x7F ? x ^ 1 : x); // 0x7F, 0xFF are NaN
      }
      case FP8_E5M2 -> {
        int x = rnd.nextInt(256);
        b[i] = (byte) ((x & 0x7C) == 0x7C ? x & ~0x40 : x); // exponent all ones: inf or NaN
      }
    }
  }

  /**
   * A standard normal value (Box-Muller with {@link StrictMath}: the same bits on every machine and
   * Java version, unlike {@code nextGaussian}'s unspecified algorithm).
   */
  static double gaussian(SplittableRandom rnd) {
    double u1 = 1.0 - rnd.nextDouble(); // (0, 1]
    double u2 = rnd.nextDouble();
    return StrictMath.sqrt(-2.0 * StrictMath.log(u1)) * StrictMath.cos(2.0 * Math.PI * u2);
  }

  /** A 64-bit finaliser (SplitMix64), so that nearby seeds and ids give unrelated streams. */
  static long mix(long z) {
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }
}
