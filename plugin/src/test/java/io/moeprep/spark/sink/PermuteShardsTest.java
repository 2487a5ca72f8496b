package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.KernelReference;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code MoePrep.permute(...).shards()} written by the safetensors sink and read back with the
 * independent reader: one file per (rank, batch), each checked against the contract and the kernels
 * run on the batch: the permuted bytes, the row map of the rank's tokens, {@code source_token}
 * indexing {@code token_id}, the tokens per expert and offsets, and the spec in the metadata.
 */
class PermuteShardsTest {
  private final SparkSession spark = SparkSessions.local();

  @TempDir Path dir;

  static Stream<Arguments> modes() {
    return Stream.of(
        Arguments.of(Dispatch.ALL_TO_ALL, Partitioning.BATCH, "none"),
        Arguments.of(Dispatch.ALL_TO_ALL, Partitioning.RANK, "perExpertPadded"),
        Arguments.of(Dispatch.ALL_GATHER, Partitioning.BATCH, "numOut"));
  }

  @ParameterizedTest
  @MethodSource("modes")
  void everyRankAndBatchIsOneFileThatMatchesTheKernels(
      Dispatch dispatch, Partitioning partitioning, String capacity) throws IOException {
    SplittableRandom rnd = Seeds.fresh("PermuteShardsTest " + dispatch + " " + partitioning);
    int e = 8;
    int ranks = 4;
    int h = 5;
    int k = 2;
    TokenBatch tb = TokenBatch.random(rnd, 3, 5 + rnd.nextInt(60), h, DType.BF16, k, e, 0.3);
    PermuteSpec.Builder b =
        PermuteSpec.builder(e, ranks)
            .hidden(h, DType.BF16)
            .topK(k)
            .dispatch(dispatch)
            .partitioning(partitioning)
            .maxBlockBytes(2L * h * (1 + rnd.nextInt(7))); // several parts per (rank, batch)
    switch (capacity) {
      case "perExpertPadded" -> b.perExpertCapacity(3, true);
      case "numOut" -> b.numOut(9);
      default -> {}
    }
    PermuteSpec spec = b.build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    Path target = dir.resolve("shards");
    out.shards().write().format("moeprep-safetensors").mode("overwrite").save(target.toString());

    TreeSet<String> expectedFiles = new TreeSet<>(List.of("_SUCCESS"));
    for (long batch : tb.batchIds()) {
      for (int r = 0; r < ranks; r++) {
        expectedFiles.add("rank=" + r + "/batch=" + batch + ".safetensors");
      }
    }
    assertEquals(expectedFiles, SinkFiles.list(target), "one file per (rank, batch)");

    ExpertPlacement placement = spec.shape().expertPlacement();
    for (long batch : tb.batchIds()) {
      List<TokenBatch.Token> toks = tb.batch(batch);
      for (int rank = 0; rank < ranks; rank++) {
        int r = rank;
        String where = "rank=" + r + "/batch=" + batch;
        // the tokens rank r receives, in token-id order, decided here from the routing alone
        List<Integer> mine = new ArrayList<>();
        for (int t = 0; t < toks.size(); t++) {
          int[] ids = toks.get(t).ids();
          boolean any = Arrays.stream(ids).anyMatch(x -> x >= 0);
          boolean local = Arrays.stream(ids).anyMatch(x -> x >= 0 && placement.rankOf(x) == r);
          if (dispatch == Dispatch.ALL_GATHER || local || (!any && r == 0)) {
            mine.add(t);
          }
        }
        try (SafetensorsReader f = SafetensorsReader.open(target.resolve(where + ".safetensors"));
            ReferenceBatch in = KernelReference.batch(tb, batch, true);
            PermuteResult exp = KernelReference.permute(in, spec.shape().optionsForRank(r))) {
          long[] tokenId = f.longs("token_id");
          assertEquals(mine.size(), tokenId.length, where + ": tokens on the rank");
          for (int i = 0; i < tokenId.length; i++) {
            assertEquals(toks.get(mine.get(i)).id(), tokenId[i], where + ": token_id " + i);
          }
          long rows = exp.numOut();
          byte[] permuted = f.bytes("permuted");
          assertArrayEquals(
              KernelReference.row(exp.permuted(), 0, exp.permuted().size()),
              permuted,
              where + ": permuted equals the kernels'");
          long[] srcToken = f.longs("source_token");
          long[] srcSlot = f.longs("source_slot");
          int[] rowIdMap = f.ints("row_id_map");
          int[] probs = f.floatBits("permuted_probs");
          assertEquals(rows, srcToken.length, where);
          int rowBytes = 2 * h;
          for (int i = 0; i < rows; i++) {
            assertEquals(exp.sourceSlot().getLong(8L * i), srcSlot[i], where + ": slot " + i);
            assertEquals(
                Float.floatToRawIntBits(exp.permutedProbs().getFloat(4L * i)),
                probs[i],
                where + ": prob " + i);
            if (srcToken[i] < 0) {
              assertEquals(-1, srcSlot[i], where + ": padding row " + i);
              continue;
            }
            TokenBatch.Token tok = toks.get(mine.get((int) srcToken[i]));
            assertArrayEquals(
                tok.hidden(),
                Arrays.copyOfRange(permuted, i * rowBytes, (i + 1) * rowBytes),
                where + ": row " + i + " is a copy of token_id[source_token]");
            assertEquals(i, rowIdMap[(int) (srcToken[i] * k + srcSlot[i])], where + ": map");
          }
          for (int t = 0; t < mine.size(); t++) {
            for (int j = 0; j < k; j++) {
              int row = rowIdMap[t * k + j];
              assertEquals(
                  exp.rowIdMap().getInt(4L * ((long) mine.get(t) * k + j)),
                  row,
                  where + ": row_id_map[" + t + "][" + j + "]");
            }
          }
          assertArrayEquals(exp.tokensPerExpert(), f.longs("tokens_per_expert"), where);
          assertArrayEquals(exp.layout().offsets(), f.longs("expert_offsets"), where);
          Map<String, String> m = f.metadata();
          assertEquals(Integer.toString(ranks), m.get("ep_size"), where);
          assertEquals(spec.shape().capacity().optionValue(), m.get("capacity"), where);
          assertEquals(Integer.toString(r), m.get("ep_rank"), where);
          assertEquals(Long.toString(batch), m.get("batch"), where);
          assertEquals("bf16", m.get("dtype"), where);
        }
      }
    }
    assertEquals(false, Files.exists(target.resolve("_temporary")), "no staging left");
  }
}
