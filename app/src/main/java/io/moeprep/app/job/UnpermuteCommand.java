package io.moeprep.app.job;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.count;
import static org.apache.spark.sql.functions.floor;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.row_number;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.io.IOException;
import java.util.Locale;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.expressions.Window;
import org.apache.spark.sql.expressions.WindowSpec;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code moeprep unpermute}: expert outputs back to tokens (combine). */
@Command(
    name = "unpermute",
    header = "combine expert outputs back to tokens (the inverse of permute, weighted by probs)",
    customSynopsis = {
      "moeprep unpermute --permuted DIR --out OUT [--expert-out X] [--backend B]",
      "    [--combine-partitions P] [--force]"
    },
    description = {
      "Combines expert outputs into one row per token (batch, token_id, hidden), equal bit for",
      "bit to a single-device unpermute: out[t] = sum over kept slots k of prob * expert_out.",
      "The spec (experts, ranks, hidden, dtype, K, layout) comes from DIR/manifest.json of",
      "moeprep permute, and the row map from DIR/row_map. Writes OUT/combined, partitioned by",
      "ep_rank: the rank a token returns to after the combine, when each of the R ranks holds",
      "an equal contiguous share of every batch (in token_id order), as in expert-parallel",
      "training; and OUT/manifest.json, written last (the commit point; OUT/combined lies in",
      "the generation it names)."
    })
final class UnpermuteCommand implements JobCommand {
  static final String MANIFEST = "manifest.json";

  @Mixin PermutedOption permuted = new PermutedOption();

  @Option(
      names = "--expert-out",
      paramLabel = "X",
      description =
          "expert outputs in the permuted layout (rows: batch, token_id, slot, prob, hidden;"
              + " packed: batch, token_ids, slots, probs, hidden). Default: DIR/data, i.e. identity"
              + " experts")
  String expertOut;

  @Option(
      names = "--out",
      paramLabel = "OUT",
      required = true,
      description = "output directory (required)")
  String out;

  @Option(
      names = "--backend",
      paramLabel = "B",
      description = "auto, cpu or cuda (default: as the permute)")
  BackendChoice backend;

  @Option(
      names = "--combine-partitions",
      paramLabel = "P",
      description = "partitions of the combine stage (default: spark.moeprep.combine.partitions)")
  Integer combinePartitions;

  @Option(names = "--force", description = "replace OUT if it exists")
  boolean force;

  @Mixin HelpOption help;

  @Override
  public void validate() {
    if (combinePartitions != null) {
      OptionChecks.inRange("--combine-partitions", combinePartitions, 0, Integer.MAX_VALUE);
    }
  }

  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    permuted.readManifest(hadoop);
    if (expertOut == null
        && permuted.manifest.path("outputs").path("format").asText("").equals("safetensors")) {
      throw new IllegalArgumentException(
          "--permuted holds safetensors files (permute --format safetensors), which unpermute does"
              + " not read as expert outputs: give --expert-out TABLE, or permute with --format"
              + " parquet");
    }
    if (expertOut != null) {
      JobContext.requireExists(hadoop, expertOut, "--expert-out");
    }
    OutputDir.checkAvailable(hadoop, out, "--out", force);
  }

  /** The spec of a permute run, from its manifest. */
  static PermuteSpec specOf(JobContext ctx, ObjectNode permManifest, BackendChoice backend) {
    Map<String, String> o = Json.strings(permManifest.get("options"));
    if (backend != null) {
      o.put("backend", backend.name().toLowerCase(Locale.ROOT));
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
    ObjectNode pm = permuted.manifest;
    PermuteSpec spec = specOf(ctx, pm, backend);
    if (combinePartitions != null) {
      spec = spec.toBuilder().combinePartitions(combinePartitions).build();
    }
    if (spec.shape().dtype().isFp8()) {
      throw new IllegalArgumentException(
          "dtype "
              + spec.shape().dtype().cliName()
              + " of --permuted cannot be combined (FP8 is moved, never converted): permute a"
              + " table of f32, bf16 or f16");
    }
    String x = expertOut == null ? permuted.path("data") : expertOut;
    ObjectNode timings = Json.object();
    BatchCounters counters =
        BatchCounters.register(ctx.spark.sparkContext(), "unpermute", spec.settings().backend());
    long tokens;
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force)) {
      try (Progress.Step s = ctx.progress.step("combine")) {
        Dataset<Row> experts = ctx.table(x, JobContext.dataSchema(spec.settings().layout()));
        Dataset<Row> rowMap = ctx.table(permuted.path("row_map"), Schemas.ROW_MAP);
        withSourceRank(
                MoePrep.unpermute(experts, rowMap, spec, counters),
                spec.shape().expertPlacement().numRanks())
            .write()
            .options(MoePrep.PARQUET_OPTIONS)
            .partitionBy("ep_rank")
            .parquet(dir.path("combined"));
        timings.put("combine", s.done());
      }
      tokens = ctx.table(dir.path("combined"), JobContext.COMBINED).count();
      ObjectNode m = Json.object();
      m.put("command", "unpermute");
      m.put("version", JobMain.VERSION);
      m.put("created", java.time.Instant.now().toString());
      ObjectNode in = m.putObject("input");
      in.put("permuted", permuted.dir);
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
      m.put(OutputDir.GENERATION, dir.generation());
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
    if (ctx.summary) {
      ctx.out.printf(
          Locale.ROOT,
          "unpermute: %d tokens, %s, %d batches (gpu %d, cpu %d), %d fallbacks in %.1f s%n",
          counters.rows(),
          BatchCounters.bytes(counters.bytes()),
          counters.gpuBatches() + counters.cpuBatches(),
          counters.gpuBatches(),
          counters.cpuBatches(),
          counters.fallbacks(),
          (System.nanoTime() - start) / 1e9);
    }
    return 0;
  }
}
