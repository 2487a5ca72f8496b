package io.moeprep.app.job;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.count;
import static org.apache.spark.sql.functions.floor;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.row_number;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.expressions.Window;
import org.apache.spark.sql.expressions.WindowSpec;

/** {@code moeprep unpermute}: expert outputs back to tokens (combine). */
final class UnpermuteCommand implements Command.Runner {
  static final String MANIFEST = "manifest.json";

  static final Command COMMAND =
      new Command(
          "unpermute",
          "combine expert outputs back to tokens (the inverse of permute, weighted by probs)",
          """
          usage: moeprep unpermute --permuted DIR --out OUT [options]

          Combines expert outputs into one row per token (batch, token_id, hidden), equal bit for
          bit to a single-device unpermute: out[t] = sum over kept slots k of prob * expert_out.
          The spec (experts, ranks, hidden, dtype, K, layout) comes from DIR/manifest.json of
          moeprep permute, and the row map from DIR/row_map. Writes OUT/combined, partitioned by
          ep_rank: the rank a token returns to after the combine, when each of the R ranks holds
          an equal contiguous share of every batch (in token_id order), as in expert-parallel
          training; and OUT/manifest.json. OUT appears only when complete.

          options:
            --permuted DIR         output directory of moeprep permute (required)
            --expert-out X         expert outputs in the permuted layout (rows: batch, token_id,
                                   slot, prob, hidden; packed: batch, token_ids, slots, probs,
                                   hidden). Default: DIR/data, i.e. identity experts
            --out OUT              output directory (required)
            --backend B            auto, cpu or cuda (default: as the permute)
            --combine-partitions P partitions of the combine stage (default: spark.moeprep.combine.partitions)
            --force                replace OUT if it exists
          """,
          Set.of("permuted", "expert-out", "out", "backend", "combine-partitions"),
          Set.of("force"),
          UnpermuteCommand::new);

  final String permuted;
  final String expertOut;
  final String out;
  final String backend;
  final int combinePartitions;
  final boolean force;

  UnpermuteCommand(Args a) {
    permuted = a.required("permuted", "DIR (the output of moeprep permute)");
    expertOut = a.str("expert-out", null);
    out = a.required("out", "OUT");
    backend = a.has("backend") ? a.choice("backend", "auto", "auto", "cpu", "cuda") : null;
    combinePartitions = a.integer("combine-partitions", -1, 0, Integer.MAX_VALUE);
    force = a.flag("force");
  }

  /** The spec of a permute run, from its manifest. */
  static PermuteSpec specOf(JobContext ctx, ObjectNode permManifest, String backend) {
    Map<String, String> o = Json.strings(permManifest.get("options"));
    if (backend != null) {
      o.put("backend", backend);
    }
    return PermuteSpec.fromOptions(o).resolve(k -> ctx.spark.conf().get(k, null));
  }

  /**
   * Adds {@code ep_rank}: the rank holding the token when each of {@code ranks} ranks holds an
   * equal contiguous share of its batch in token_id order ({@code floor(position * R / n)}).
   */
  static Dataset<Row> withSourceRank(Dataset<Row> combined, int ranks) {
    WindowSpec byBatch = Window.partitionBy("batch");
    return combined
        .withColumn("__pos", row_number().over(byBatch.orderBy("token_id")).minus(1))
        .withColumn("__n", count(lit(1)).over(byBatch))
        .withColumn("ep_rank", floor(col("__pos").multiply(ranks).divide(col("__n"))).cast("int"))
        .drop("__pos", "__n");
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    ctx.requireExists(permuted, "--permuted");
    ObjectNode pm = Json.read(ctx.hadoop(), permuted, PermuteCommand.MANIFEST, "--permuted");
    PermuteSpec spec = specOf(ctx, pm, backend);
    if (combinePartitions >= 0) {
      spec = spec.toBuilder().combinePartitions(combinePartitions).build();
    }
    if (spec.shape().dtype().isFp8()) {
      throw new IllegalArgumentException(
          "dtype "
              + spec.shape().dtype().cliName()
              + " of --permuted cannot be combined (FP8 is moved, never converted): permute a"
              + " table of f32, bf16 or f16");
    }
    String x = expertOut == null ? permuted + "/data" : expertOut;
    if (expertOut != null) {
      ctx.requireExists(expertOut, "--expert-out");
    }
    ObjectNode timings = Json.object();
    long tokens;
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force)) {
      try (Progress.Step s = ctx.progress.step("combine")) {
        Dataset<Row> experts = ctx.spark.read().parquet(x);
        Dataset<Row> rowMap = ctx.spark.read().parquet(permuted + "/row_map");
        withSourceRank(
                MoePrep.unpermute(experts, rowMap, spec), spec.shape().expertPlacement().numRanks())
            .write()
            .options(MoePrep.PARQUET_OPTIONS)
            .partitionBy("ep_rank")
            .parquet(dir.path("combined"));
        timings.put("combine", s.done());
      }
      tokens = ctx.spark.read().parquet(dir.path("combined")).count();
      ObjectNode m = Json.object();
      m.put("command", "unpermute");
      m.put("version", JobMain.VERSION);
      m.put("created", java.time.Instant.now().toString());
      ObjectNode in = m.putObject("input");
      in.put("permuted", permuted);
      in.put("expert_out", x);
      in.put("identity_experts", expertOut == null);
      ObjectNode opts = m.putObject("options");
      PermuteCommand.resolvedOptions(spec, Json.strings(pm.get("options"))).forEach(opts::put);
      opts.put("combinePartitions", Integer.toString(spec.settings().combinePartitions()));
      m.put("backend", spec.settings().backend().name().toLowerCase(Locale.ROOT));
      if (spec.settings().backend() == BackendChoice.AUTO) {
        m.put("backend_note", "auto: the GPU where the executor has one, else the CPU");
      }
      m.put("combined_tokens", tokens);
      ObjectNode outs = m.putObject("outputs");
      outs.put("combined", "combined");
      outs.put("partitioned_by", "ep_rank");
      timings.put("total", (System.nanoTime() - start) / 1e9);
      m.set("timings_s", timings);
      dir.writeText(MANIFEST, Json.write(m));
      dir.commit();
    }
    ctx.out.printf(
        Locale.ROOT,
        "unpermute: %d tokens combined from %s -> %s%n",
        tokens,
        expertOut == null ? "identity experts" : expertOut,
        out);
    return 0;
  }
}
