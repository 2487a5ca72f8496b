package io.moeprep.spark.sink;

import static io.moeprep.spark.sink.ShardSchema.EXPERT_OFFSETS;
import static io.moeprep.spark.sink.ShardSchema.PERMUTED;
import static io.moeprep.spark.sink.ShardSchema.PERMUTED_PROBS;
import static io.moeprep.spark.sink.ShardSchema.ROW_ID_MAP;
import static io.moeprep.spark.sink.ShardSchema.SOURCE_SLOT;
import static io.moeprep.spark.sink.ShardSchema.SOURCE_TOKEN;
import static io.moeprep.spark.sink.ShardSchema.TOKENS_PER_EXPERT;
import static io.moeprep.spark.sink.ShardSchema.TOKEN_ID;

import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.sink.SafetensorsHeader.Tensor;
import java.io.IOException;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;

/**
 * One (rank, batch)'s safetensors file, written from its shard parts as they arrive, without
 * holding its {@code permuted} tensor: part 0 is checked before the output is opened, the header
 * (whose offsets follow from part 0's {@code total_rows}, {@code tokens}, {@code hidden}, {@code
 * top_k}, {@code num_experts} and {@code dtype}) is written first, then each part's {@code
 * permuted} rows as the part arrives; the per-row tensors gather in off-heap buffers and, with part
 * 0's tensors, follow the last part. Spark-free.
 *
 * <p>Tensors, in file order (each aligned to its element size in the file, see {@link
 * SafetensorsHeader}), with {@code n = total_rows}, {@code T = tokens}:
 *
 * <ul>
 *   <li>{@code permuted} [n, H] of the dtype ({@code F32, BF16, F16, F8_E4M3, F8_E5M2})
 *   <li>{@code source_token}, {@code source_slot} [n] I64, {@code -1} on padding rows
 *   <li>{@code tokens_per_expert} [E] I64, {@code expert_offsets} [E+1] I64
 *   <li>{@code token_id} [T] I64
 *   <li>{@code row_id_map} [T, K] I32
 *   <li>{@code permuted_probs} [n] F32, only when the parts carry probs
 * </ul>
 *
 * <p>Checked, each failure an {@link IllegalArgumentException} naming the (rank, batch), the part,
 * the column and the value: before the output is opened, part 0's columns ({@link ShardChecks}) and
 * values ({@code row_id_map} in {@code [0, n)} or {@code -1}, {@code tokens_per_expert >= 0},
 * {@code expert_offsets} from 0, each segment at least its kept rows, the last at most {@code n},
 * {@code token_id >= 0}); before a part's rows are written, its sizes, its order, and its {@code
 * source_token} in {@code [0, T)} and {@code source_slot} in {@code [0, K)}, both or neither {@code
 * -1}; in {@link #finish()}, before anything after {@code permuted} is written, that the parts'
 * rows sum to {@code n}, that the rows with a source are exactly each expert's first {@code
 * tokens_per_expert[e]} rows of its segment, and that {@code row_id_map} maps exactly those slots
 * to those rows. A failure after the output was opened leaves an incomplete file, which the caller
 * deletes.
 */
final class RankBatchFile implements AutoCloseable {
  /** Opens the file's output stream; called once, after part 0 passed its checks. */
  @FunctionalInterface
  interface Output {
    OutputStream open() throws IOException;
  }

  /** Part 0's scalar columns (its arrays are not kept). */
  private final ShardPart first;

  private final ShardChecks.Spec spec;
  private HostBuffer sourceToken;
  private HostBuffer sourceSlot;
  private HostBuffer probs;
  private HostBuffer rowIdMap;
  private HostBuffer tokensPerExpert;
  private HostBuffer expertOffsets;
  private HostBuffer tokenId;
  private SafetensorsWriter writer;
  private long rows;
  private int nextPart;
  private boolean finished;

  private RankBatchFile(ShardPart first, ShardChecks.Spec spec) {
    this.first = first;
    this.spec = spec;
  }

  /**
   * Checks part 0 ({@code first}), opens the output, writes the header and part 0's rows.
   *
   * @throws IllegalArgumentException when part 0 is invalid (the output is then never opened)
   */
  static RankBatchFile start(ShardPart first, Output output) throws IOException {
    ShardChecks.Spec spec = ShardChecks.first(first);
    ShardChecks.rows(first, spec);
    SafetensorsHeader header;
    try {
      header = header(first, spec);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          first.where() + ": column metadata cannot go in a safetensors header: " + e.getMessage(),
          e);
    }
    RankBatchFile f = new RankBatchFile(first.scalars(), spec);
    try {
      f.loadFirst(first);
      f.writer = new SafetensorsWriter(output.open(), header);
      f.add(first);
      return f;
    } catch (Throwable t) {
      Closeables.closeSuppressed(f, t);
      throw t;
    }
  }

  /** The file's header: tensor order, shapes and metadata, from part 0. */
  static SafetensorsHeader header(ShardPart p, ShardChecks.Spec spec) {
    long n = p.totalRows();
    List<Tensor> t = new ArrayList<>();
    t.add(new Tensor(PERMUTED, TensorDType.of(spec.dtype()), new long[] {n, p.hidden()}));
    t.add(new Tensor(SOURCE_TOKEN, TensorDType.I64, new long[] {n}));
    t.add(new Tensor(SOURCE_SLOT, TensorDType.I64, new long[] {n}));
    t.add(new Tensor(TOKENS_PER_EXPERT, TensorDType.I64, new long[] {p.numExperts()}));
    t.add(new Tensor(EXPERT_OFFSETS, TensorDType.I64, new long[] {p.numExperts() + 1L}));
    t.add(new Tensor(TOKEN_ID, TensorDType.I64, new long[] {p.tokens()}));
    t.add(new Tensor(ROW_ID_MAP, TensorDType.I32, new long[] {p.tokens(), p.topK()}));
    if (spec.hasProbs()) {
      t.add(new Tensor(PERMUTED_PROBS, TensorDType.F32, new long[] {n}));
    }
    return SafetensorsHeader.of(t, spec.metadata());
  }

  /** Where the (rank, batch) is, for messages: {@code rank=R batch=B}. */
  String where() {
    return "rank=" + first.epRank() + " batch=" + first.batch();
  }

  /** The number of the part that {@link #add} expects next; {@code parts} once complete. */
  int nextPart() {
    return nextPart;
  }

  /** The (rank, batch)'s number of parts. */
  int parts() {
    return first.parts();
  }

  /** Size of the whole file in bytes. */
  long fileBytes() {
    return writer.header().fileBytes();
  }

  /** True once every part was added. */
  boolean complete() {
    return nextPart == first.parts();
  }

  /** Allocates the buffers, copies part 0's tensors in and checks their values. */
  private void loadFirst(ShardPart part0) {
    long n = first.totalRows();
    sourceToken = HostBuffer.allocate(8 * n);
    sourceSlot = HostBuffer.allocate(8 * n);
    probs = spec.hasProbs() ? HostBuffer.allocate(4 * n) : null;
    rowIdMap = copy(part0.rowIdMap());
    tokensPerExpert = copy(part0.tokensPerExpert());
    expertOffsets = copy(part0.expertOffsets());
    tokenId = copy(part0.tokenId());
    String w = first.where();
    long slots = first.tokens() * first.topK();
    for (long s = 0; s < slots; s++) {
      int row = rowIdMap.getInt(4 * s);
      if (row < -1 || row >= n) {
        throw new IllegalArgumentException(
            w
                + ": row_id_map["
                + s / first.topK()
                + "]["
                + s % first.topK()
                + "] = "
                + row
                + " is out of range [0, total_rows = "
                + n
                + ") or -1");
      }
    }
    int e = first.numExperts();
    if (expertOffsets.getLong(0) != 0) {
      throw new IllegalArgumentException(
          w + ": expert_offsets[0] = " + expertOffsets.getLong(0) + " is invalid: must be 0");
    }
    for (int x = 0; x < e; x++) {
      long kept = tokensPerExpert.getLong(8L * x);
      long begin = expertOffsets.getLong(8L * x);
      long end = expertOffsets.getLong(8L * x + 8);
      if (kept < 0) {
        throw new IllegalArgumentException(
            w + ": tokens_per_expert[" + x + "] = " + kept + " is invalid: must be >= 0");
      }
      if (end < begin || end - begin < kept) {
        throw new IllegalArgumentException(
            w
                + ": expert_offsets["
                + (x + 1)
                + "] = "
                + end
                + " is invalid: must be >= expert_offsets["
                + x
                + "] + tokens_per_expert["
                + x
                + "] = "
                + begin
                + " + "
                + kept);
      }
    }
    long last = expertOffsets.getLong(8L * e);
    if (last > n) {
      throw new IllegalArgumentException(
          w
              + ": expert_offsets["
              + e
              + "] = "
              + last
              + " is invalid: must be <= total_rows = "
              + n);
    }
    for (long t = 0; t < first.tokens(); t++) {
      long id = tokenId.getLong(8 * t);
      if (id < 0) {
        throw new IllegalArgumentException(
            w + ": token_id[" + t + "] = " + id + " is invalid: must be >= 0");
      }
    }
  }

  private static HostBuffer copy(byte[] bytes) {
    HostBuffer b = HostBuffer.allocate(bytes.length);
    b.copyFrom(0, bytes, 0, bytes.length);
    return b;
  }

  /**
   * Checks part {@code p} and writes its rows. Part 0 was added by {@link #start}; the others come
   * in part order.
   *
   * @throws IllegalArgumentException when {@code p} is not the next part of this (rank, batch) or
   *     fails its checks (nothing of it is written then)
   */
  void add(ShardPart p) throws IOException {
    if (finished || complete()) {
      throw new IllegalStateException(where() + ": every part was added already");
    }
    if (p.epRank() != first.epRank() || p.batch() != first.batch() || p.part() != nextPart) {
      throw new IllegalArgumentException(
          where()
              + ": part "
              + nextPart
              + " of "
              + first.parts()
              + " was expected next, but rank="
              + p.epRank()
              + " batch="
              + p.batch()
              + " part="
              + p.part()
              + " came: the parts of a (rank, batch) must come consecutively, in part order, within"
              + " one partition (ShardSchema.inWriteOrder arranges them)");
    }
    if (p.part() > 0) {
      ShardChecks.later(p, first);
    }
    long n = ShardChecks.rows(p, spec);
    if (n > first.totalRows() - rows) {
      throw new IllegalArgumentException(
          p.where()
              + ": parts 0 to "
              + p.part()
              + " have "
              + (rows + n)
              + " rows: more than total_rows = "
              + first.totalRows());
    }
    if (p.part() == first.parts() - 1 && rows + n != first.totalRows()) {
      throw new IllegalArgumentException(
          p.where()
              + ": the "
              + first.parts()
              + " parts have "
              + (rows + n)
              + " rows: must be total_rows = "
              + first.totalRows());
    }
    sourceToken.copyFrom(8 * rows, p.sourceToken(), 0, p.sourceToken().length);
    sourceSlot.copyFrom(8 * rows, p.sourceSlot(), 0, p.sourceSlot().length);
    if (probs != null) {
      probs.copyFrom(4 * rows, p.permutedProbs(), 0, p.permutedProbs().length);
    }
    checkSources(p, rows, n);
    if (p.part() == 0) {
      writer.expectTensor(PERMUTED);
    }
    writer.write(p.permuted().array(), p.permuted().offset(), p.permuted().length());
    rows += n;
    nextPart++;
  }

  private void checkSources(ShardPart p, long from, long n) {
    for (long i = from; i < from + n; i++) {
      long t = sourceToken.getLong(8 * i);
      long k = sourceSlot.getLong(8 * i);
      if (t == -1 && k == -1) {
        continue;
      }
      if (t < 0 || t >= first.tokens()) {
        throw new IllegalArgumentException(
            p.where()
                + ": source_token of row "
                + i
                + " = "
                + t
                + " is out of range [0, tokens = "
                + first.tokens()
                + ") or -1 (with source_slot -1)");
      }
      if (k < 0 || k >= first.topK()) {
        throw new IllegalArgumentException(
            p.where()
                + ": source_slot of row "
                + i
                + " = "
                + k
                + " is out of range [0, top_k = "
                + first.topK()
                + ") or -1 (with source_token -1)");
      }
    }
  }

  /**
   * Checks that the rows agree with {@code tokens_per_expert}, {@code expert_offsets} and {@code
   * row_id_map}, writes the tensors that follow {@code permuted} and closes the file.
   *
   * @throws IllegalStateException when parts are missing
   * @throws IllegalArgumentException when the tensors disagree (nothing more is written)
   */
  void finish() throws IOException {
    if (!complete()) {
      throw new IllegalStateException(
          where() + ": part " + nextPart + " of " + first.parts() + " is missing");
    }
    checkStructure();
    writer.writeTensor(SOURCE_TOKEN, sourceToken);
    writer.writeTensor(SOURCE_SLOT, sourceSlot);
    writer.writeTensor(TOKENS_PER_EXPERT, tokensPerExpert);
    writer.writeTensor(EXPERT_OFFSETS, expertOffsets);
    writer.writeTensor(TOKEN_ID, tokenId);
    writer.writeTensor(ROW_ID_MAP, rowIdMap);
    if (probs != null) {
      writer.writeTensor(PERMUTED_PROBS, probs);
    }
    writer.finish();
    finished = true;
  }

  private void checkStructure() {
    int e = first.numExperts();
    int k = first.topK();
    long kept = 0;
    for (int x = 0; x <= e; x++) {
      long begin = expertOffsets.getLong(8L * x);
      long end = x < e ? expertOffsets.getLong(8L * x + 8) : first.totalRows();
      long real = x < e ? begin + tokensPerExpert.getLong(8L * x) : begin;
      for (long i = begin; i < end; i++) {
        long t = sourceToken.getLong(8 * i);
        if ((t >= 0) != (i < real)) {
          throw new IllegalArgumentException(
              where()
                  + ": row "
                  + i
                  + " has source_token "
                  + t
                  + " but it is a "
                  + (i < real ? "kept" : "padding")
                  + " row of "
                  + (x < e ? "expert " + x + "'s segment" : "the tail")
                  + " ["
                  + begin
                  + ", "
                  + end
                  + ") (kept rows ["
                  + begin
                  + ", "
                  + real
                  + ")):"
                  + " source_token must be -1 exactly on padding rows");
        }
        if (t >= 0) {
          long slot = sourceSlot.getLong(8 * i);
          int mapped = rowIdMap.getInt(4 * (t * k + slot));
          if (mapped != i) {
            throw new IllegalArgumentException(
                where()
                    + ": row "
                    + i
                    + " comes from token "
                    + t
                    + " slot "
                    + slot
                    + " but row_id_map["
                    + t
                    + "]["
                    + slot
                    + "] = "
                    + mapped
                    + ": they must agree");
          }
          kept++;
        }
      }
    }
    long mapped = 0;
    long slots = first.tokens() * k;
    for (long s = 0; s < slots; s++) {
      if (rowIdMap.getInt(4 * s) >= 0) {
        mapped++;
      }
    }
    if (mapped != kept) {
      throw new IllegalArgumentException(
          where()
              + ": row_id_map maps "
              + mapped
              + " slots to rows but "
              + kept
              + " rows have a source: every kept row is one slot's row");
    }
  }

  /** Frees the buffers and closes the output (incomplete unless {@link #finish()} ran). */
  @Override
  public void close() {
    Closeables.closeAll(
        () -> {
          if (writer != null) {
            writer.close();
          }
        },
        sourceToken,
        sourceSlot,
        probs,
        rowIdMap,
        tokensPerExpert,
        expertOffsets,
        tokenId);
  }
}
