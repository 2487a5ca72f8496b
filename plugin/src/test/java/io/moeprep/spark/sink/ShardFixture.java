package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import scala.jdk.javaapi.CollectionConverters;

/**
 * One (rank, batch) of a test: random tokens and routing, their CPU permute masked to the rank (the
 * expected tensors), the shard parts that carry it to the sink, and the check of a file read back
 * against both the permute's result and the contract (each kept row a copy of its token, padding
 * rows zero, row map and sources agreeing).
 */
final class ShardFixture implements AutoCloseable {
  private static final MoeKernels KERNELS = MoeKernels.create(BackendChoice.CPU);

  /**
   * The shape of a (rank, batch).
   *
   * @param capacity the policy, and {@code capacityName} its name in the metadata
   */
  record Shape(
      int epSize,
      long tokens,
      int hidden,
      int topK,
      int experts,
      DType dtype,
      boolean probs,
      CapacityPolicy capacity,
      String capacityName,
      int align) {

    /** No capacity, no padding. */
    static Shape of(int epSize, long tokens, int hidden, int topK, int experts, DType dtype) {
      return new Shape(
          epSize, tokens, hidden, topK, experts, dtype, true, CapacityPolicy.NONE, "none", 1);
    }

    /** Per-expert capacity {@code c}, padded to it, and alignment {@code a}. */
    Shape padded(long c, int a) {
      return new Shape(
          epSize,
          tokens,
          hidden,
          topK,
          experts,
          dtype,
          probs,
          CapacityPolicy.perExpert(c, true),
          "perExpertPadded:" + c,
          a);
    }

    /** Without probs. */
    Shape noProbs() {
      return new Shape(
          epSize, tokens, hidden, topK, experts, dtype, false, capacity, capacityName, align);
    }
  }

  final Shape shape;
  final int rank;
  final long batch;
  final RandomBatch input;
  final long[] tokenIds;
  final PermuteResult result;
  final Map<String, String> inputMetadata;

  private ShardFixture(
      Shape shape, int rank, long batch, RandomBatch input, long[] ids, PermuteResult result) {
    this.shape = shape;
    this.rank = rank;
    this.batch = batch;
    this.input = input;
    this.tokenIds = ids;
    this.result = result;
    Map<String, String> m = new LinkedHashMap<>();
    m.put("ep_size", Integer.toString(shape.epSize()));
    m.put("capacity", shape.capacityName());
    m.put("align", Integer.toString(shape.align()));
    m.put("note", "a \"quoted\" \\ back\tslash, \u00e9t\u00e9, \u65e5\u672c, \ud83d\ude00");
    this.inputMetadata = m;
  }

  /** Random tokens of {@code shape} permuted for {@code rank}; the caller closes it. */
  static ShardFixture create(SplittableRandom rnd, Shape shape, int rank, long batch) {
    RandomBatch in =
        RandomBatch.create(
            rnd, shape.tokens(), shape.hidden(), shape.topK(), shape.experts(), shape.dtype(), 0.2);
    try {
      long[] ids = new long[(int) shape.tokens()];
      long id = batch * 1_000_000L + rnd.nextInt(100);
      for (int t = 0; t < ids.length; t++) {
        id += 1 + rnd.nextInt(5);
        ids[t] = id;
      }
      PermuteOptions options =
          PermuteOptions.forRank(shape.experts(), shape.epSize(), rank)
              .withCapacity(shape.capacity())
              .withAlign(shape.align());
      PermuteResult r = KERNELS.permute(in.input(shape.probs()), options);
      return new ShardFixture(shape, rank, batch, in, ids, r);
    } catch (RuntimeException | Error e) {
      in.close();
      throw e;
    }
  }

  long rows() {
    return result.numOut();
  }

  long rowBytes() {
    return shape.dtype().rowBytes(shape.hidden());
  }

  /** The (rank, batch) cut into {@code parts} parts at random rows (parts may be empty). */
  List<ShardPart> parts(int parts, SplittableRandom rnd) {
    long n = rows();
    long[] cuts = new long[parts - 1];
    for (int i = 0; i < cuts.length; i++) {
      cuts[i] = rnd.nextLong(n + 1);
    }
    Arrays.sort(cuts);
    return partsAt(cuts);
  }

  /**
   * The (rank, batch) cut before each row of {@code at} (ascending): {@code at.length + 1} parts.
   */
  List<ShardPart> partsAt(long... at) {
    int parts = at.length + 1;
    long n = rows();
    long[] cuts = new long[parts + 1];
    System.arraycopy(at, 0, cuts, 1, at.length);
    cuts[parts] = n;
    List<ShardPart> out = new ArrayList<>();
    for (int p = 0; p < parts; p++) {
      long a = cuts[p];
      long b = cuts[p + 1];
      boolean first = p == 0;
      out.add(
          new ShardPart(
              rank,
              batch,
              p,
              parts,
              n,
              shape.tokens(),
              shape.hidden(),
              shape.topK(),
              shape.experts(),
              shape.dtype().cliName(),
              result.permuted().toBytes(a * rowBytes(), (b - a) * rowBytes()),
              result.sourceToken().toBytes(8 * a, 8 * (b - a)),
              result.sourceSlot().toBytes(8 * a, 8 * (b - a)),
              shape.probs() ? result.permutedProbs().toBytes(4 * a, 4 * (b - a)) : null,
              first ? result.rowIdMap().toBytes(0, result.rowIdMap().size()) : null,
              first ? longs(result.tokensPerExpert()) : null,
              first ? longs(result.layout().offsets()) : null,
              first ? longs(tokenIds) : null,
              first ? new LinkedHashMap<>(inputMetadata) : null));
    }
    return out;
  }

  /** A shard part as a row of {@link ShardSchema#SHARDS} (the metadata a Scala map). */
  static Row row(ShardPart p) {
    return RowFactory.create(
        p.epRank(),
        p.batch(),
        p.part(),
        p.parts(),
        p.totalRows(),
        p.tokens(),
        p.hidden(),
        p.topK(),
        p.numExperts(),
        p.dtype(),
        p.permuted().toArray(),
        p.sourceToken(),
        p.sourceSlot(),
        p.permutedProbs(),
        p.rowIdMap(),
        p.tokensPerExpert(),
        p.expertOffsets(),
        p.tokenId(),
        p.metadata() == null ? null : CollectionConverters.asScala(p.metadata()));
  }

  static List<Row> rows(List<ShardPart> parts) {
    List<Row> out = new ArrayList<>();
    for (ShardPart p : parts) {
      out.add(row(p));
    }
    return out;
  }

  static byte[] longs(long[] values) {
    ByteBuffer b = ByteBuffer.allocate(8 * values.length).order(ByteOrder.LITTLE_ENDIAN);
    for (long v : values) {
      b.putLong(v);
    }
    return b.array();
  }

  /** The relative path of this (rank, batch)'s file. */
  String file() {
    return "rank=" + rank + "/batch=" + batch + ".safetensors";
  }

  /** The metadata the file must carry: the input's map and the keys from the columns. */
  Map<String, String> expectedMetadata() {
    Map<String, String> m = new TreeMap<>(inputMetadata);
    m.put("ep_rank", Integer.toString(rank));
    m.put("batch", Long.toString(batch));
    m.put("dtype", shape.dtype().cliName());
    m.put("num_experts", Integer.toString(shape.experts()));
    m.put("top_k", Integer.toString(shape.topK()));
    m.put("hidden", Integer.toString(shape.hidden()));
    m.put("tokens", Long.toString(shape.tokens()));
    m.put("total_rows", Long.toString(rows()));
    m.put("moeprep_layout", "1");
    return m;
  }

  /** The safetensors name of a MoePrep dtype, as the format's documentation lists them. */
  static String safetensorsName(DType d) {
    return switch (d) {
      case F32 -> "F32";
      case BF16 -> "BF16";
      case F16 -> "F16";
      case FP8_E4M3 -> "F8_E4M3";
      case FP8_E5M2 -> "F8_E5M2";
    };
  }

  /** Checks a file read back: every tensor's dtype, shape and bytes, the metadata, the contract. */
  void check(SafetensorsReader r) throws IOException {
    long n = rows();
    int h = shape.hidden();
    int k = shape.topK();
    long t = shape.tokens();
    int e = shape.experts();
    List<String> order =
        new ArrayList<>(
            List.of(
                "permuted",
                "source_token",
                "source_slot",
                "tokens_per_expert",
                "expert_offsets",
                "token_id",
                "row_id_map"));
    if (shape.probs()) {
      order.add("permuted_probs");
    }
    String where = file();
    assertEquals(order, r.order(), where + ": tensors in data order");
    assertEquals(expectedMetadata(), new TreeMap<>(r.metadata()), where + ": __metadata__");
    shapeIs(r, "permuted", safetensorsName(shape.dtype()), n, h);
    shapeIs(r, "source_token", "I64", n);
    shapeIs(r, "source_slot", "I64", n);
    shapeIs(r, "tokens_per_expert", "I64", e);
    shapeIs(r, "expert_offsets", "I64", e + 1);
    shapeIs(r, "token_id", "I64", t);
    shapeIs(r, "row_id_map", "I32", t, k);
    byte[] permuted = r.bytes("permuted");
    assertArrayEquals(
        result.permuted().toBytes(0, result.permuted().size()), permuted, where + ": permuted");
    long[] srcToken = r.longs("source_token");
    long[] srcSlot = r.longs("source_slot");
    int[] rowIdMap = r.ints("row_id_map");
    assertArrayEquals(longsOf(result.sourceToken()), srcToken, where + ": source_token");
    assertArrayEquals(longsOf(result.sourceSlot()), srcSlot, where + ": source_slot");
    assertArrayEquals(
        intsOf(result.rowIdMap(), result.rowIdMap().size()), rowIdMap, where + ": row_id_map");
    assertArrayEquals(
        result.tokensPerExpert(), r.longs("tokens_per_expert"), where + ": tokens_per_expert");
    assertArrayEquals(
        result.layout().offsets(), r.longs("expert_offsets"), where + ": expert_offsets");
    assertArrayEquals(tokenIds, r.longs("token_id"), where + ": token_id");
    int[] probs = shape.probs() ? r.floatBits("permuted_probs") : null;
    if (probs != null) {
      assertArrayEquals(
          intsOf(result.permutedProbs(), result.permutedProbs().size()),
          probs,
          where + ": permuted_probs");
    }
    // the contract, from the input: row i copies token source_token[i]; padding rows are zero
    long rb = rowBytes();
    byte[] token = new byte[(int) rb];
    long kept = 0;
    for (int i = 0; i < n; i++) {
      long src = srcToken[i];
      byte[] row = Arrays.copyOfRange(permuted, (int) (i * rb), (int) ((i + 1) * rb));
      if (src < 0) {
        assertEquals(-1, srcSlot[i], where + ": padding row " + i + " slot");
        assertArrayEquals(new byte[(int) rb], row, where + ": padding row " + i + " is zero");
        if (probs != null) {
          assertEquals(0, probs[i], where + ": padding row " + i + " prob");
        }
        continue;
      }
      kept++;
      input.tokens.copyTo(src * rb, token, 0, token.length);
      assertArrayEquals(token, row, where + ": row " + i + " copies token " + src);
      int slot = (int) (src * k + srcSlot[i]);
      assertEquals(i, rowIdMap[slot], where + ": row_id_map of row " + i + "'s slot");
      if (probs != null) {
        assertEquals(input.probs.getInt(4L * slot), probs[i], where + ": prob of row " + i);
      }
    }
    assertEquals(kept, Arrays.stream(r.longs("tokens_per_expert")).sum(), where + ": kept rows");
    assertTrue(kept == Arrays.stream(rowIdMap).filter(x -> x >= 0).count(), where + ": slots");
  }

  private static void shapeIs(SafetensorsReader r, String name, String dtype, long... dims) {
    assertEquals(dtype, r.info(name).dtype(), name + " dtype");
    assertArrayEquals(dims, r.info(name).shape(), name + " shape");
  }

  private static long[] longsOf(HostBuffer b) {
    long[] v = new long[(int) (b.size() / 8)];
    for (int i = 0; i < v.length; i++) {
      v[i] = b.getLong(8L * i);
    }
    return v;
  }

  private static int[] intsOf(HostBuffer b, long bytes) {
    int[] v = new int[(int) (bytes / 4)];
    for (int i = 0; i < v.length; i++) {
      v[i] = b.getInt(4L * i);
    }
    return v;
  }

  @Override
  public void close() {
    try (RandomBatch a = input;
        PermuteResult b = result) {
      // both closed
    }
  }
}
