package io.moeprep.spark.sink;

import java.util.Map;

/**
 * One shard row (one part of a (rank, batch)) as plain Java values, with the meanings of {@link
 * ShardSchema#SHARDS}. Binary columns are little-endian bytes; {@code null} where the column is
 * null (the part-0-only columns on later parts, {@code permutedProbs} without probs). Spark-free.
 *
 * @param epRank the EP rank
 * @param batch the batch
 * @param part this part's number, {@code [0, parts)}
 * @param parts the (rank, batch)'s number of parts
 * @param totalRows output rows of the (rank, batch), padding included
 * @param tokens {@code T}, rows of {@code rowIdMap}
 * @param hidden {@code H}, elements per row of {@code permuted}
 * @param topK {@code K}, columns of {@code rowIdMap}
 * @param numExperts {@code E}, global experts
 * @param dtype MoePrep's name of the element type ({@code bf16}, ...)
 * @param permuted this part's rows: {@code rows x H} elements (a range of an array that may be
 *     Spark's row buffer: valid only while the part is being added)
 * @param sourceToken int64 per row of this part
 * @param sourceSlot int64 per row of this part
 * @param permutedProbs float32 per row of this part, or {@code null}
 * @param rowIdMap int32 {@code [T, K]} (part 0), or {@code null}
 * @param tokensPerExpert int64 {@code [E]} (part 0), or {@code null}
 * @param expertOffsets int64 {@code [E+1]} (part 0), or {@code null}
 * @param tokenId int64 {@code [T]} (part 0), or {@code null}
 * @param metadata the spec's strings (part 0), or {@code null}
 */
record ShardPart(
    int epRank,
    long batch,
    int part,
    int parts,
    long totalRows,
    long tokens,
    int hidden,
    int topK,
    int numExperts,
    String dtype,
    ShardPart.Slice permuted,
    byte[] sourceToken,
    byte[] sourceSlot,
    byte[] permutedProbs,
    byte[] rowIdMap,
    byte[] tokensPerExpert,
    byte[] expertOffsets,
    byte[] tokenId,
    Map<String, String> metadata) {

  /**
   * A range of a byte array.
   *
   * @param array the array
   * @param offset the first byte
   * @param length the number of bytes
   */
  record Slice(byte[] array, int offset, int length) {
    Slice {
      java.util.Objects.checkFromIndexSize(offset, length, array.length);
    }

    /** All of {@code array}. */
    static Slice of(byte[] array) {
      return new Slice(array, 0, array.length);
    }

    /** A copy of the bytes. */
    byte[] toArray() {
      return java.util.Arrays.copyOfRange(array, offset, offset + length);
    }
  }

  /** A part whose {@code permuted} is a whole array. */
  ShardPart(
      int epRank,
      long batch,
      int part,
      int parts,
      long totalRows,
      long tokens,
      int hidden,
      int topK,
      int numExperts,
      String dtype,
      byte[] permuted,
      byte[] sourceToken,
      byte[] sourceSlot,
      byte[] permutedProbs,
      byte[] rowIdMap,
      byte[] tokensPerExpert,
      byte[] expertOffsets,
      byte[] tokenId,
      Map<String, String> metadata) {
    this(
        epRank,
        batch,
        part,
        parts,
        totalRows,
        tokens,
        hidden,
        topK,
        numExperts,
        dtype,
        Slice.of(permuted),
        sourceToken,
        sourceSlot,
        permutedProbs,
        rowIdMap,
        tokensPerExpert,
        expertOffsets,
        tokenId,
        metadata);
  }

  /** This part's scalar columns, without its arrays (so that keeping it keeps no data). */
  ShardPart scalars() {
    byte[] none = new byte[0];
    return new ShardPart(
        epRank,
        batch,
        part,
        parts,
        totalRows,
        tokens,
        hidden,
        topK,
        numExperts,
        dtype,
        none,
        none,
        none,
        null,
        null,
        null,
        null,
        null,
        null);
  }

  /** Where this part is, for messages: {@code rank=R batch=B part=P}. */
  String where() {
    return "rank=" + epRank + " batch=" + batch + " part=" + part;
  }
}
