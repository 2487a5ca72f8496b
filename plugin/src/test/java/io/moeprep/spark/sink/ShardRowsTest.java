package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Map;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.catalyst.CatalystTypeConverters;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import scala.jdk.javaapi.CollectionConverters;

/** Reading shard rows from Spark's rows: values, nulls, and {@code permuted} without a copy. */
class ShardRowsTest {
  private static Object[] values() {
    return new Object[] {
      3,
      9L,
      0,
      2,
      2L,
      1L,
      2,
      1,
      4,
      "f16",
      new byte[] {1, 2, 3, 4, 5, 6, 7, 8},
      new byte[16],
      new byte[16],
      null,
      new byte[4],
      new byte[32],
      new byte[40],
      new byte[8],
      CollectionConverters.asScala(Map.of("ep_size", "4"))
    };
  }

  /** The columns in another order than {@link ShardSchema#SHARDS}'s, as a DataFrame may have. */
  private static final int[] ORDER = {
    18, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17
  };

  private static StructType reordered() {
    StructField[] f = new StructField[ORDER.length];
    for (int i = 0; i < f.length; i++) {
      f[i] = ShardSchema.SHARDS.fields()[ORDER[i]];
    }
    return new StructType(f);
  }

  private static InternalRow internal(Object[] v) {
    Object[] r = new Object[v.length];
    for (int i = 0; i < r.length; i++) {
      r[i] = v[ORDER[i]];
    }
    Row row = RowFactory.create(r);
    return (InternalRow) CatalystTypeConverters.createToCatalystConverter(reordered()).apply(row);
  }

  @Test
  void readsEveryColumnByNameAndPermutedInPlace() {
    StructType schema = reordered();
    ShardRows rows = new ShardRows(ShardSchema.ordinals(schema));
    UnsafeRow u = UnsafeProjection.create(schema).apply(internal(values()));
    ShardPart p = rows.read(u);
    assertEquals("rank=3 batch=9 part=0", p.where());
    assertEquals(2, p.parts());
    assertEquals("f16", p.dtype());
    assertSame(u.getBaseObject(), p.permuted().array(), "permuted is read from the row's buffer");
    assertArrayEquals(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}, p.permuted().toArray());
    assertNull(p.permutedProbs());
    assertEquals(40, p.expertOffsets().length);
    assertEquals(Map.of("ep_size", "4"), p.metadata());
  }

  @Test
  void aNullWhereTheSchemaHasNoneIsNamed() {
    ShardRows rows = new ShardRows(ShardSchema.ordinals(reordered()));
    Object[] v = values();
    v[1] = null;
    assertEquals(
        "a shard row has batch = null: ep_rank, batch, part and parts must be set on every row",
        assertThrows(IllegalArgumentException.class, () -> rows.read(internal(v))).getMessage());
    Object[] w = values();
    w[11] = null;
    assertEquals(
        "rank=3 batch=9 part=0: column source_token is null: it must be set on every part",
        assertThrows(IllegalArgumentException.class, () -> rows.read(internal(w))).getMessage());
  }
}
