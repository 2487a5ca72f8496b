package io.moeprep.spark.exec;

import io.moeprep.spark.sink.ShardSchema;
import io.moeprep.spark.spec.Schemas;
import org.apache.spark.sql.types.StructType;

/** Which of the permute outputs a rank task emits, and its schema. */
public enum RankOutput {
  /** {@link Schemas#ROWS}. */
  ROWS(Schemas.ROWS),
  /** {@link Schemas#PACKED}. */
  PACKED(Schemas.PACKED),
  /** {@link Schemas#ROW_MAP}. */
  ROW_MAP(Schemas.ROW_MAP),
  /** {@link Schemas#TOKENS_PER_EXPERT}. */
  TOKENS_PER_EXPERT(Schemas.TOKENS_PER_EXPERT),
  /** {@link ShardSchema#SHARDS}: the safetensors sink's input, every tensor of a (rank, batch). */
  SHARDS(ShardSchema.SHARDS);

  private final StructType schema;

  RankOutput(StructType schema) {
    this.schema = schema;
  }

  /** The schema of the rows this output emits. */
  public StructType schema() {
    return schema;
  }
}
