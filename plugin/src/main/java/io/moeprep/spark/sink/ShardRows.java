package io.moeprep.spark.sink;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.catalyst.util.MapData;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.unsafe.Platform;

/**
 * Reads shard rows ({@link ShardSchema#SHARDS}) from Spark's internal rows into {@link ShardPart}s,
 * failing on a null where the schema has none, with the row's rank, batch and part.
 */
final class ShardRows {
  private final int[] ordinals;

  /**
   * @param ordinals the ordinal of each {@link ShardSchema#SHARDS} column in the rows ({@link
   *     ShardSchema#ordinals})
   */
  ShardRows(int[] ordinals) {
    this.ordinals = ordinals.clone();
  }

  /**
   * The values of {@code row}: binary columns copied out of it, but for {@code permuted}, which may
   * point into the row and is valid only until the next row.
   */
  ShardPart read(InternalRow row) {
    for (int c = 0; c < 4; c++) {
      if (row.isNullAt(ordinals[c])) {
        throw new IllegalArgumentException(
            "a shard row has "
                + name(c)
                + " = null: ep_rank, batch, part and parts must be set on every row");
      }
    }
    int rank = row.getInt(ordinals[0]);
    long batch = row.getLong(ordinals[1]);
    int part = row.getInt(ordinals[2]);
    String where = "rank=" + rank + " batch=" + batch + " part=" + part;
    for (int c = 4; c <= 12; c++) {
      if (row.isNullAt(ordinals[c])) {
        throw new IllegalArgumentException(
            where + ": column " + name(c) + " is null: it must be set on every part");
      }
    }
    return new ShardPart(
        rank,
        batch,
        part,
        row.getInt(ordinals[3]),
        row.getLong(ordinals[4]),
        row.getLong(ordinals[5]),
        row.getInt(ordinals[6]),
        row.getInt(ordinals[7]),
        row.getInt(ordinals[8]),
        row.getUTF8String(ordinals[9]).toString(),
        permuted(row),
        row.getBinary(ordinals[11]),
        row.getBinary(ordinals[12]),
        binary(row, 13),
        binary(row, 14),
        binary(row, 15),
        binary(row, 16),
        binary(row, 17),
        map(row, 18));
  }

  /**
   * The {@code permuted} column without a copy where the row is an {@link UnsafeRow} on a heap
   * array (the common case): a part may be up to 2 GiB, which a copy would double.
   */
  private ShardPart.Slice permuted(InternalRow row) {
    int o = ordinals[10];
    if (row instanceof UnsafeRow u && u.getBaseObject() instanceof byte[] base) {
      long offsetAndSize = u.getLong(o);
      long at = u.getBaseOffset() + (offsetAndSize >>> 32) - Platform.BYTE_ARRAY_OFFSET;
      return new ShardPart.Slice(base, Math.toIntExact(at), (int) offsetAndSize);
    }
    return ShardPart.Slice.of(row.getBinary(o));
  }

  private static String name(int c) {
    StructField f = ShardSchema.SHARDS.fields()[c];
    return f.name();
  }

  private byte[] binary(InternalRow row, int c) {
    return row.isNullAt(ordinals[c]) ? null : row.getBinary(ordinals[c]);
  }

  private Map<String, String> map(InternalRow row, int c) {
    if (row.isNullAt(ordinals[c])) {
      return null;
    }
    MapData m = row.getMap(ordinals[c]);
    ArrayData keys = m.keyArray();
    ArrayData values = m.valueArray();
    Map<String, String> out = new LinkedHashMap<>();
    for (int i = 0; i < m.numElements(); i++) {
      out.put(
          keys.getUTF8String(i).toString(),
          values.isNullAt(i) ? null : values.getUTF8String(i).toString());
    }
    return out;
  }
}
