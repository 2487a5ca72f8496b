package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.KernelReference;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.exec.ExecutorRuntime;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.apache.spark.storage.StorageLevel;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Local-mode permute against the kernels run directly on each batch sorted by token id: every
 * output of every (rank, batch) must be equal, bit for bit.
 */
class PermuteTest {
  private final SparkSession spark = SparkSessions.local();

  /** Checks every output of a permute against the kernels, for every (rank, batch). */
  static void assertMatchesKernels(TokenBatch tb, PermuteOutput out, boolean probs) {
    PermuteSpec spec = out.spec();
    int ranks = spec.shape().expertPlacement().numRanks();
    Map<String, List<Row>> rows = group(out.rows().collectAsList(), "row");
    Map<String, List<Row>> packed = group(out.packed().collectAsList(), "row_offset");
    Map<String, List<Row>> rowMap = group(out.rowMap().collectAsList(), "token_id");
    Map<String, List<Row>> tpe = group(out.tokensPerExpert().collectAsList(), "expert");
    int checkedRows = 0;
    for (long b : tb.batchIds()) {
      List<TokenBatch.Token> toks = tb.batch(b);
      for (int r = 0; r < ranks; r++) {
        String key = r + "/" + b;
        try (ReferenceBatch in = KernelReference.batch(tb, b, probs);
            PermuteResult exp = KernelReference.permute(in, spec.shape().optionsForRank(r))) {
          checkedRows += checkRows(key, toks, exp, spec, rows.getOrDefault(key, List.of()), probs);
          checkPacked(key, exp, spec, rows.getOrDefault(key, List.of()), packed.get(key));
          checkRowMap(key, toks, exp, spec, rowMap.getOrDefault(key, List.of()));
          checkTokensPerExpert(key, exp, spec, r, tpe.getOrDefault(key, List.of()));
        }
      }
    }
    assertEquals(
        rows.values().stream().mapToInt(List::size).sum(), checkedRows, "rows beyond the kernel's");
  }

  private static int checkRows(
      String key,
      List<TokenBatch.Token> toks,
      PermuteResult exp,
      PermuteSpec spec,
      List<Row> actual,
      boolean probs) {
    assertEquals(exp.numOut(), actual.size(), key + ": output rows");
    SegmentLayout l = exp.layout();
    int[] localOf = localIndex(spec, actual.isEmpty() ? -1 : actual.get(0).getInt(0));
    for (int i = 0; i < actual.size(); i++) {
      Row a = actual.get(i);
      String at = key + " row " + i;
      assertEquals(i, a.getInt(2), at);
      long src = exp.sourceToken().getLong(8L * i);
      assertEquals(src < 0 ? -1 : toks.get((int) src).id(), a.getLong(5), at + " token_id");
      assertEquals(exp.sourceSlot().getLong(8L * i), (long) a.getInt(6), at + " slot");
      int expert = -1;
      for (int e = 0; e < l.numExperts(); e++) {
        if (l.offset(e) <= i && i < l.offset(e + 1)) {
          expert = e;
        }
      }
      assertEquals(expert, a.getInt(3), at + " expert");
      assertEquals(expert < 0 ? -1 : localOf[expert], a.getInt(4), at + " local_expert");
      if (probs) {
        assertEquals(
            Float.floatToRawIntBits(exp.permutedProbs().getFloat(4L * i)),
            Float.floatToRawIntBits(a.getFloat(7)),
            at + " prob");
      } else {
        assertTrue(a.isNullAt(7), at + " prob is null without probs");
      }
      assertArrayEquals(
          KernelReference.row(exp.permuted(), i, spec.shape().rowBytes()),
          (byte[]) a.get(8),
          at + " hidden");
    }
    return actual.size();
  }

  private static void checkPacked(
      String key, PermuteResult exp, PermuteSpec spec, List<Row> rows, List<Row> blocks) {
    if (exp.numOut() == 0) {
      assertNull(blocks, key + ": no packed block");
      return;
    }
    // the blocks, in row order, are the ROWS output glued together
    int next = 0;
    for (Row blk : blocks) {
      assertEquals(next, blk.getLong(5), key + ": blocks are contiguous");
      int n = blk.getInt(6);
      List<Long> ids = blk.getList(7);
      List<Integer> slots = blk.getList(8);
      byte[] hidden = (byte[]) blk.get(10);
      assertEquals(n * spec.shape().rowBytes(), hidden.length, key + ": block bytes");
      for (int j = 0; j < n; j++) {
        Row r = rows.get(next + j);
        assertEquals(r.getInt(3), blk.getInt(2), key + ": block expert");
        assertEquals(r.getLong(5), ids.get(j));
        assertEquals(r.getInt(6), slots.get(j));
        if (!r.isNullAt(7)) {
          assertEquals(r.getFloat(7), (float) blk.<Float>getList(9).get(j));
        }
        byte[] one =
            java.util.Arrays.copyOfRange(
                hidden,
                (int) (j * spec.shape().rowBytes()),
                (int) ((j + 1) * spec.shape().rowBytes()));
        assertArrayEquals((byte[]) r.get(8), one, key + ": block hidden row " + j);
      }
      next += n;
    }
    assertEquals(exp.numOut(), next, key + ": packed rows");
  }

  private static void checkRowMap(
      String key, List<TokenBatch.Token> toks, PermuteResult exp, PermuteSpec spec, List<Row> a) {
    Map<Long, List<Integer>> got = new HashMap<>();
    for (Row r : a) {
      got.put(r.getLong(2), r.getList(3));
    }
    int k = spec.shape().topK();
    for (int t = 0; t < toks.size(); t++) {
      int[] ids = new int[k];
      boolean any = false;
      for (int j = 0; j < k; j++) {
        ids[j] = exp.rowIdMap().getInt(4L * (t * k + j));
        any |= ids[j] >= 0;
      }
      List<Integer> g = got.remove(toks.get(t).id());
      if (g == null) {
        assertTrue(!any, key + ": token " + toks.get(t).id() + " has rows but no row-map entry");
        continue;
      }
      assertEquals(TokenBatch.boxed(ids), g, key + ": row map of token " + toks.get(t).id());
    }
    assertTrue(got.isEmpty(), key + ": row-map entries of unknown tokens " + got.keySet());
  }

  private static void checkTokensPerExpert(
      String key, PermuteResult exp, PermuteSpec spec, int rank, List<Row> a) {
    int[] local = spec.shape().expertPlacement().expertsOf(rank);
    assertEquals(local.length, a.size(), key + ": one entry per local expert");
    SegmentLayout l = exp.layout();
    for (int i = 0; i < local.length; i++) {
      Row r = a.get(i);
      int e = local[i];
      assertEquals(e, r.getInt(2));
      assertEquals(i, r.getInt(3));
      assertEquals(l.kept(e), r.getLong(4), key + " kept of expert " + e);
      assertEquals(l.droppedPerExpert()[e], r.getLong(5), key + " dropped of expert " + e);
      assertEquals(l.offset(e), r.getLong(6));
      assertEquals(l.offset(e + 1) - l.offset(e), r.getLong(7));
    }
  }

  private static int[] localIndex(PermuteSpec spec, int rank) {
    int[] idx = new int[spec.shape().numExperts()];
    java.util.Arrays.fill(idx, -1);
    if (rank >= 0) {
      int[] local = spec.shape().expertPlacement().expertsOf(rank);
      for (int i = 0; i < local.length; i++) {
        idx[local[i]] = i;
      }
    }
    return idx;
  }

  /** Rows grouped by "rank/batch", each group sorted by {@code orderBy}. */
  static Map<String, List<Row>> group(List<Row> rows, String orderBy) {
    Map<String, List<Row>> m = new HashMap<>();
    for (Row r : rows) {
      m.computeIfAbsent(r.getInt(0) + "/" + r.getLong(1), x -> new ArrayList<>()).add(r);
    }
    for (List<Row> l : m.values()) {
      int f = l.get(0).fieldIndex(orderBy);
      l.sort(Comparator.comparingLong(r -> ((Number) r.get(f)).longValue()));
    }
    return m;
  }

  /** Every dispatch under every partitioning. */
  static Stream<Arguments> modes() {
    return Arrays.stream(Dispatch.values())
        .flatMap(d -> Arrays.stream(Partitioning.values()).map(p -> Arguments.of(d, p)));
  }

  @ParameterizedTest
  @MethodSource("modes")
  void randomBatchesEqualTheKernels(Dispatch dispatch, Partitioning partitioning) {
    SplittableRandom rnd =
        Seeds.fresh("randomBatchesEqualTheKernels " + dispatch + " " + partitioning);
    TokenBatch tb = TokenBatch.random(rnd, 3, 1 + rnd.nextInt(120), 37, DType.BF16, 3, 8, 0.25);
    PermuteSpec spec =
        PermuteSpec.builder(8, 4)
            .hidden(37, DType.BF16)
            .topK(3)
            .dispatch(dispatch)
            .partitioning(partitioning)
            .backend(BackendChoice.CPU)
            .chunkBytes(1 + rnd.nextInt(600)) // many chunks per (rank, batch), merged by the rank
            .build();
    long before = ExecutorRuntime.ROWS_PERMUTED.getCount();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    assertMatchesKernels(tb, out, true);
    assertTrue(ExecutorRuntime.ROWS_PERMUTED.getCount() > before, "rowsPermuted metric moved");
  }

  @ParameterizedTest
  @MethodSource("modes")
  void explicitPlacementWithoutProbs(Dispatch dispatch, Partitioning partitioning) {
    SplittableRandom rnd =
        Seeds.fresh("explicitPlacementWithoutProbs " + dispatch + " " + partitioning);
    TokenBatch tb = TokenBatch.random(rnd, 2, 1 + rnd.nextInt(80), 5, DType.F32, 4, 6, 0.1);
    int[] placement = {2, 0, 2, 1, 0, 2}; // E = 6 over 3 ranks, not contiguous
    PermuteSpec spec =
        PermuteSpec.builder(6, 3)
            .placement(placement)
            .hidden(5, DType.F32)
            .topK(4)
            .dispatch(dispatch)
            .partitioning(partitioning)
            .build();
    assertMatchesKernels(tb, MoePrep.permute(tb.toDataFrame(spark, false), spec), false);
  }

  @ParameterizedTest
  @MethodSource("modes")
  void capacityAndPadding(Dispatch dispatch, Partitioning partitioning) {
    SplittableRandom rnd = Seeds.fresh("capacityAndPadding " + dispatch + " " + partitioning);
    TokenBatch tb = TokenBatch.random(rnd, 2, 20 + rnd.nextInt(60), 3, DType.F16, 2, 8, 0.2);
    Dataset<Row> df = tb.toDataFrame(spark, true);
    PermuteSpec.Builder base = PermuteSpec.builder(8, 2).hidden(3, DType.F16).topK(2);
    base.dispatch(dispatch).partitioning(partitioning);
    assertMatchesKernels(
        tb, MoePrep.permute(df, base.perExpertCapacity(3, true).align(1).build()), true);
    assertMatchesKernels(
        tb, MoePrep.permute(df, base.perExpertCapacity(2, false).align(4).build()), true);
    PermuteSpec.Builder numOut =
        PermuteSpec.builder(8, 2).hidden(3, DType.F16).topK(2).partitioning(partitioning);
    assertMatchesKernels(
        tb, MoePrep.permute(df, numOut.dispatch(dispatch).numOut(7).build()), true);
    assertMatchesKernels(
        tb, MoePrep.permute(df, numOut.dispatch(dispatch).numOut(400).build()), true);
  }

  @ParameterizedTest
  @MethodSource("modes")
  void rankWithNoTokensAndTokensWithoutLocalSlots(Dispatch dispatch, Partitioning partitioning) {
    SplittableRandom rnd = Seeds.fresh("rankWithNoTokens " + dispatch + " " + partitioning);
    // E = 8 over 4 ranks; every id is in [0, 4): ranks 2 and 3 receive no token at all
    List<TokenBatch.Token> toks = new ArrayList<>();
    for (int t = 0; t < 30; t++) {
      byte[] h = new byte[2 * 4];
      rnd.nextBytes(h);
      int[] ids = {rnd.nextInt(4), t % 5 == 0 ? -1 : rnd.nextInt(4)};
      if (t % 7 == 0) {
        ids = new int[] {-1, -1}; // a token routed nowhere
      }
      toks.add(new TokenBatch.Token(t * 3L, t % 2, h, ids, new float[] {0.25f, 0.75f}));
    }
    TokenBatch tb = new TokenBatch(toks, 4, DType.BF16, 2, 8);
    PermuteSpec spec =
        PermuteSpec.builder(8, 4)
            .hidden(4, DType.BF16)
            .topK(2)
            .dispatch(dispatch)
            .partitioning(partitioning)
            .build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    assertMatchesKernels(tb, out, true);
    List<Row> perRank = out.rows().groupBy("ep_rank").count().orderBy("ep_rank").collectAsList();
    assertEquals(2, perRank.size(), "only ranks 0 and 1 have rows: " + perRank);
    // padded capacity: ranks without tokens still hold their zero segments, as on one device
    PermuteSpec padded = spec.toBuilder().perExpertCapacity(2, true).build();
    PermuteOutput out2 = MoePrep.permute(tb.toDataFrame(spark, true), padded);
    assertMatchesKernels(tb, out2, true);
    assertEquals(
        2L * 2 * 2, out2.rows().where("ep_rank = 3").count(), "2 batches x 2 experts x C=2");
  }

  /**
   * A persisted dispatch plan gives the kernels' outputs, and every task that reads it releases its
   * block: the shared session fails a task that does not ({@code
   * spark.storage.exceptionOnPinLeak=true}), as Spark's adaptive execution does when it fills the
   * cache itself.
   */
  @org.junit.jupiter.api.Test
  void persistedDispatchPlanReleasesItsBlocks() {
    SplittableRandom rnd = Seeds.fresh("persistedDispatchPlanReleasesItsBlocks");
    TokenBatch tb = TokenBatch.random(rnd, 3, 1 + rnd.nextInt(100), 6, DType.BF16, 2, 8, 0.2);
    PermuteSpec spec = PermuteSpec.builder(8, 4).hidden(6, DType.BF16).topK(2).build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    out.persist(StorageLevel.MEMORY_AND_DISK());
    try {
      assertEquals(StorageLevel.MEMORY_AND_DISK(), out.dispatched().storageLevel());
      assertMatchesKernels(tb, out, true);
      assertEquals(out.rows().count(), out.rows().count(), "read twice from the cache");
    } finally {
      out.unpersist();
    }
    assertEquals(StorageLevel.NONE(), out.dispatched().storageLevel());
  }

  @org.junit.jupiter.api.Test
  void partitionIsRank() {
    SplittableRandom rnd = Seeds.fresh("partitionIsRank");
    TokenBatch tb = TokenBatch.random(rnd, 2, 50, 2, DType.F32, 2, 16, 0.0);
    PermuteSpec spec = PermuteSpec.builder(16, 8).hidden(2, DType.F32).topK(2).build();
    for (Dataset<Row> d :
        List.of(
            MoePrep.permute(tb.toDataFrame(spark, true), spec).rows(),
            MoePrep.permute(tb.toDataFrame(spark, true), spec).packed())) {
      assertEquals(8, d.rdd().getNumPartitions());
      long wrong =
          d.withColumn("pid", functions.spark_partition_id()).where("pid != ep_rank").count();
      assertEquals(0, wrong, "partition i holds rank i only");
    }
  }
}
