package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.Numerics;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** {@code array<float>} hidden input, batching by token id, and PACKED block splitting. */
class InputFormsTest {
  private final SparkSession spark = SparkSessions.local();

  @ParameterizedTest
  @EnumSource(
      value = DType.class,
      names = {"F32", "BF16", "F16"})
  void arrayOfFloatIsRoundedToTheDtype(DType dtype) {
    SplittableRandom rnd = Seeds.fresh("arrayOfFloat " + dtype);
    int h = 7;
    List<Row> rows = new ArrayList<>();
    List<TokenBatch.Token> toks = new ArrayList<>();
    for (int t = 0; t < 40; t++) {
      List<Float> floats = new ArrayList<>();
      byte[] bytes = new byte[h * dtype.bytes()];
      for (int i = 0; i < h; i++) {
        float f =
            switch (i) {
              case 0 -> Float.NaN;
              case 1 -> 70000f; // F16 overflow
              case 2 -> 1e-8f; // F16 subnormal range
              default -> (float) (rnd.nextGaussian() * 3);
            };
        floats.add(f);
        switch (dtype) {
          case F32 -> putInt(bytes, 4 * i, Numerics.f32Bits(f));
          case BF16 -> putShort(bytes, 2 * i, Numerics.floatToBf16(f));
          default -> putShort(bytes, 2 * i, Numerics.floatToF16(f));
        }
      }
      int[] ids = {rnd.nextInt(4), -1};
      rows.add(RowFactory.create((long) t, floats, TokenBatch.boxed(ids)));
      toks.add(new TokenBatch.Token(t, t / 16, bytes, ids, null));
    }
    StructType schema =
        new StructType()
            .add("token_id", DataTypes.LongType)
            .add("hidden", DataTypes.createArrayType(DataTypes.FloatType))
            .add("expert_ids", DataTypes.createArrayType(DataTypes.IntegerType));
    Dataset<Row> df = spark.createDataFrame(rows, schema);
    // no batch column: batch = token_id / tokensPerBatch
    PermuteSpec spec =
        PermuteSpec.builder(4, 2).hidden(h, dtype).topK(2).tokensPerBatch(16).build();
    PermuteTest.assertMatchesKernels(
        new TokenBatch(toks, h, dtype, 2, 4), MoePrep.permute(df, spec), false);
  }

  @Test
  void packedBlocksAreSplitAtTheLimit() {
    SplittableRandom rnd = Seeds.fresh("packedSplit");
    TokenBatch tb = TokenBatch.random(rnd, 2, 60, 5, DType.BF16, 2, 2, 0.0);
    // 10-byte rows, 32-byte limit: 3 rows per part
    PermuteSpec spec =
        PermuteSpec.builder(2, 1).hidden(5, DType.BF16).topK(2).maxBlockBytes(32).build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    List<Row> blocks = out.packed().orderBy("batch", "row_offset").collectAsList();
    int parts = 0;
    for (Row b : blocks) {
      assertEquals(Math.min(3, b.getInt(6)), b.getInt(6));
      assertEquals(b.getInt(6) * 10, ((byte[]) b.get(10)).length);
      parts = Math.max(parts, b.getInt(4));
    }
    assertEquals(19, parts, "60 rows of one expert per batch: parts 0..19");
    PermuteTest.assertMatchesKernels(tb, out, true);
  }

  private static void putShort(byte[] b, int at, short v) {
    b[at] = (byte) v;
    b[at + 1] = (byte) (v >>> 8);
  }

  private static void putInt(byte[] b, int at, int v) {
    for (int i = 0; i < 4; i++) {
      b[at + i] = (byte) (v >>> (8 * i));
    }
  }

  @Test
  void identicalBytesRegardlessOfInputForm() {
    SplittableRandom rnd = Seeds.fresh("identicalBytes");
    TokenBatch tb = TokenBatch.random(rnd, 1, 30, 4, DType.F32, 2, 4, 0.0);
    // F32 bytes without NaNs, given once as binary and once as array<float>
    List<Row> floatsRows = new ArrayList<>();
    List<TokenBatch.Token> clean = new ArrayList<>();
    for (TokenBatch.Token t : tb.tokens) {
      byte[] b = new byte[16];
      List<Float> fl = new ArrayList<>();
      for (int i = 0; i < 4; i++) {
        float f = (float) rnd.nextGaussian();
        fl.add(f);
        putInt(b, 4 * i, Float.floatToRawIntBits(f));
      }
      clean.add(new TokenBatch.Token(t.id(), t.batch(), b, t.ids(), t.probs()));
      floatsRows.add(RowFactory.create(t.id(), t.batch(), fl, TokenBatch.boxed(t.ids())));
    }
    TokenBatch binary = new TokenBatch(clean, 4, DType.F32, 2, 4);
    StructType schema =
        new StructType()
            .add("token_id", DataTypes.LongType)
            .add("batch", DataTypes.LongType)
            .add("hidden", DataTypes.createArrayType(DataTypes.FloatType))
            .add("expert_ids", DataTypes.createArrayType(DataTypes.IntegerType));
    PermuteSpec spec = PermuteSpec.builder(4, 2).hidden(4, DType.F32).topK(2).build();
    List<Row> a =
        MoePrep.permute(binary.toDataFrame(spark, false), spec)
            .rows()
            .orderBy("ep_rank", "batch", "row")
            .collectAsList();
    List<Row> b =
        MoePrep.permute(spark.createDataFrame(floatsRows, schema), spec)
            .rows()
            .orderBy("ep_rank", "batch", "row")
            .collectAsList();
    assertEquals(a.size(), b.size());
    for (int i = 0; i < a.size(); i++) {
      assertArrayEquals((byte[]) a.get(i).get(8), (byte[]) b.get(i).get(8));
      assertEquals(a.get(i).getLong(5), b.get(i).getLong(5));
    }
  }
}
