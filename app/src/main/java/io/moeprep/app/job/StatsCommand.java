package io.moeprep.app.job;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Row;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code moeprep stats}: expert load per rank and batch, a PNG chart and a Markdown report. */
@Command(
    name = "stats",
    header = "expert load per rank and batch: imbalance, drop rates, a PNG chart and a report",
    customSynopsis =
        "moeprep stats --permuted DIR [--out DIR-stats] [--width 1200] [--height 600] [--force]",
    description = {
      "Reads DIR/tokens_per_expert of moeprep permute and writes into OUT:",
      "  expert_load.png  tokens per expert (kept, dropped stacked lighter), coloured by rank",
      "  report.md        load per rank and per batch: imbalance (max/mean) and drop rates",
      "  stats.json       the same numbers, every batch",
      "Imbalance is max/mean over the E experts (expert imbalance) or the R ranks (rank",
      "imbalance), 1.0 being perfectly balanced: of the routed slots (kept + dropped, what the",
      "router asked for) and of the kept slots (the work each expert or rank does once the",
      "capacity has dropped the excess). Drop rate: dropped/(kept+dropped) slots."
    })
final class StatsCommand implements JobCommand {
  static final String CHART = "expert_load.png";
  static final String REPORT = "report.md";
  static final String JSON = "stats.json";
  static final int MAX_BATCH_ROWS = 50;

  @Mixin PermutedOption permuted = new PermutedOption();

  @Option(
      names = "--out",
      paramLabel = "OUT",
      description = "output directory (default: DIR-stats)")
  String out;

  @Option(names = "--width", paramLabel = "W", description = "chart width in pixels (default 1200)")
  int width = 1200;

  @Option(
      names = "--height",
      paramLabel = "H",
      description = "chart height in pixels (default 600)")
  int height = 600;

  @Option(names = "--force", description = "replace OUT if it exists")
  boolean force;

  @Mixin HelpOption help;

  @Override
  public void validate() {
    if (out == null) {
      String p =
          permuted.dir.endsWith("/")
              ? permuted.dir.substring(0, permuted.dir.length() - 1)
              : permuted.dir;
      out = p + "-stats";
    }
    OptionChecks.inRange("--width", width, 200, 20000);
    OptionChecks.inRange("--height", height, 150, 20000);
  }

  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    permuted.readManifest(hadoop);
    OutputDir.checkAvailable(hadoop, out, "--out", force);
  }

  /** The numbers of a stats run, for the demo's summary. */
  record Summary(
      double expertImbalance,
      double rankImbalance,
      double worstBatchExpertImbalance,
      double dropRate,
      String chart,
      String report) {}

  Summary last;

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    ObjectNode pm = permuted.manifest;
    PermuteSpec spec = UnpermuteCommand.specOf(ctx, pm, BackendChoice.CPU);
    ExpertLoad load = new ExpertLoad(spec.shape().expertPlacement());
    long rowsRead = 0;
    try (Progress.Step s = ctx.progress.step("read tokens per expert")) {
      for (Row r :
          ctx.table(permuted.path("tokens_per_expert"), Schemas.TOKENS_PER_EXPERT)
              .select("batch", "expert", "kept", "dropped")
              .collectAsList()) {
        load.add(r.getLong(0), r.getInt(1), r.getLong(2), r.getLong(3));
        rowsRead++;
      }
      s.done();
    }
    LoadChart chart = new LoadChart(width, height, true);
    String title =
        String.format(
            Locale.ROOT,
            "Tokens per expert, coloured by EP rank: %d experts on %d ranks, %d batches",
            load.kept.length,
            load.numRanks(),
            load.keptByBatch.size());
    byte[] png = chart.png(load, title);
    if (chart.textFailed()) {
      ctx.err.println("  stats: fonts could not be loaded: the chart has no text");
    }
    ObjectNode json = json(load, pm);
    byte[] reportBytes = report(load, pm, json).getBytes(StandardCharsets.UTF_8);
    byte[] jsonBytes = Json.write(json).getBytes(StandardCharsets.UTF_8);
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force)) {
      dir.writeBytes(CHART, png);
      dir.writeBytes(REPORT, reportBytes);
      dir.writeBytes(JSON, jsonBytes);
      dir.commit();
    }
    String chartPath = out + "/" + CHART;
    last =
        new Summary(
            json.get("expert_imbalance").asDouble(),
            json.get("rank_imbalance").asDouble(),
            json.get("worst_batch_expert_imbalance").asDouble(),
            json.get("drop_rate").asDouble(),
            chartPath,
            out + "/" + REPORT);
    ctx.out.printf(
        Locale.ROOT,
        "stats: load imbalance (max/mean) over experts %.2f (worst batch %.2f), over ranks %.2f;"
            + " %.1f%% of slots dropped%n",
        last.expertImbalance(),
        last.worstBatchExpertImbalance(),
        last.rankImbalance(),
        100 * last.dropRate());
    ctx.out.println("stats: chart " + chartPath + ", report " + last.report());
    if (ctx.summary) {
      ctx.out.printf(
          Locale.ROOT,
          "stats: %d rows of tokens per expert (%d batches, %d experts, %d ranks), 3 files, %s in"
              + " %.1f s%n",
          rowsRead,
          load.keptByBatch.size(),
          load.kept.length,
          load.numRanks(),
          BatchCounters.bytes(png.length + reportBytes.length + jsonBytes.length),
          (System.nanoTime() - start) / 1e9);
    }
    return 0;
  }

  static ObjectNode json(ExpertLoad load, ObjectNode pm) {
    ObjectNode j = Json.object();
    j.put("input", pm.get("input").get("path").asText());
    long kept = ExpertLoad.sum(load.kept);
    long dropped = ExpertLoad.sum(load.dropped);
    j.put("experts", load.kept.length);
    j.put("ranks", load.numRanks());
    j.put("batches", load.keptByBatch.size());
    j.put("kept_slots", kept);
    j.put("dropped_slots", dropped);
    j.put("drop_rate", ExpertLoad.dropRate(kept, dropped));
    long[] routed = ExpertLoad.add(load.kept, load.dropped);
    j.put("expert_imbalance", ExpertLoad.imbalance(routed));
    j.put("rank_imbalance", ExpertLoad.imbalance(load.perRank(routed)));
    j.put("expert_imbalance_kept", ExpertLoad.imbalance(load.kept));
    j.put("rank_imbalance_kept", ExpertLoad.imbalance(load.perRank(load.kept)));
    ArrayNode te = j.putArray("tokens_per_expert");
    ArrayNode de = j.putArray("dropped_per_expert");
    for (int e = 0; e < load.kept.length; e++) {
      te.add(load.kept[e]);
      de.add(load.dropped[e]);
    }
    ArrayNode ranks = j.putArray("per_rank");
    long[] rk = load.perRank(load.kept);
    long[] rd = load.perRank(load.dropped);
    for (int r = 0; r < load.numRanks(); r++) {
      ObjectNode n = ranks.addObject();
      n.put("rank", r);
      int[] ex = load.placement.expertsOf(r);
      long[] mine = new long[ex.length];
      for (int i = 0; i < ex.length; i++) {
        mine[i] = load.kept[ex[i]] + load.dropped[ex[i]];
      }
      n.put("kept_slots", rk[r]);
      n.put("dropped_slots", rd[r]);
      n.put("drop_rate", ExpertLoad.dropRate(rk[r], rd[r]));
      n.put("share", kept == 0 ? 0 : (double) rk[r] / kept);
      n.put("expert_imbalance", ExpertLoad.imbalance(mine));
    }
    ArrayNode batches = j.putArray("per_batch");
    double worst = 0;
    for (Map.Entry<Long, long[]> b : load.keptByBatch.entrySet()) {
      long[] k = b.getValue();
      long[] d = load.droppedByBatch.get(b.getKey());
      ObjectNode n = batches.addObject();
      n.put("batch", b.getKey());
      ArrayNode pr = n.putArray("kept_per_rank");
      for (long x : load.perRank(k)) {
        pr.add(x);
      }
      long[] rt = ExpertLoad.add(k, d);
      double ei = ExpertLoad.imbalance(rt);
      worst = Math.max(worst, ei);
      n.put("expert_imbalance", ei);
      n.put("rank_imbalance", ExpertLoad.imbalance(load.perRank(rt)));
      n.put("expert_imbalance_kept", ExpertLoad.imbalance(k));
      n.put("rank_imbalance_kept", ExpertLoad.imbalance(load.perRank(k)));
      n.put("drop_rate", ExpertLoad.dropRate(ExpertLoad.sum(k), ExpertLoad.sum(d)));
    }
    j.put("worst_batch_expert_imbalance", worst);
    return j;
  }

  static String report(ExpertLoad load, ObjectNode pm, ObjectNode j) {
    StringBuilder b = new StringBuilder();
    Map<String, String> o = Json.strings(pm.get("options"));
    b.append("# MoePrep expert load\n\n");
    b.append(
        String.format(
            Locale.ROOT,
            "Permute of `%s`: %s experts on %d ranks, K = %s, %s, capacity %s, %d batches.%n%n",
            pm.get("input").get("path").asText(),
            o.get("numExperts"),
            load.numRanks(),
            o.get("topK"),
            o.getOrDefault("dispatch", ""),
            o.getOrDefault("capacity", "none"),
            load.keptByBatch.size()));
    b.append("![tokens per expert](" + CHART + ")\n\n");
    b.append(
        String.format(
            Locale.ROOT,
            "- expert imbalance (max/mean of routed slots over experts): **%.2f** (worst batch"
                + " %.2f); of kept slots: %.2f%n"
                + "- rank imbalance (max/mean of routed slots over ranks): **%.2f**; of kept slots:"
                + " %.2f%n"
                + "- dropped slots: %d of %d (**%.2f%%**)%n%n",
            j.get("expert_imbalance").asDouble(),
            j.get("worst_batch_expert_imbalance").asDouble(),
            j.get("expert_imbalance_kept").asDouble(),
            j.get("rank_imbalance").asDouble(),
            j.get("rank_imbalance_kept").asDouble(),
            j.get("dropped_slots").asLong(),
            j.get("dropped_slots").asLong() + j.get("kept_slots").asLong(),
            100 * j.get("drop_rate").asDouble()));
    b.append(
        "## Per rank\n\n| rank | experts | kept | dropped | drop rate | share of kept | expert imbalance"
            + " (routed) |\n");
    b.append("|---:|---|---:|---:|---:|---:|---:|\n");
    for (var n : j.get("per_rank")) {
      int r = n.get("rank").asInt();
      int[] ex = load.placement.expertsOf(r);
      b.append(
          String.format(
              Locale.ROOT,
              "| %d | %s | %d | %d | %.2f%% | %.1f%% | %.2f |%n",
              r,
              ex.length == 0
                  ? "-"
                  : ex.length > 6
                      ? ex[0] + ".." + ex[ex.length - 1]
                      : java.util.Arrays.toString(ex),
              n.get("kept_slots").asLong(),
              n.get("dropped_slots").asLong(),
              100 * n.get("drop_rate").asDouble(),
              100 * n.get("share").asDouble(),
              n.get("expert_imbalance").asDouble()));
    }
    b.append("\n## Per batch\n\n| batch |");
    for (int r = 0; r < load.numRanks(); r++) {
      b.append(" rank ").append(r).append(" |");
    }
    b.append(" rank imbalance | expert imbalance | drop rate |\n|---:|");
    // per rank: kept slots; imbalances: of routed slots
    b.append("---:|".repeat(load.numRanks()));
    b.append("---:|---:|---:|\n");
    int shown = 0;
    for (var n : j.get("per_batch")) {
      if (shown++ == MAX_BATCH_ROWS) {
        b.append(
            "\n("
                + (j.get("per_batch").size() - MAX_BATCH_ROWS)
                + " more batches in "
                + JSON
                + ")\n");
        break;
      }
      b.append("| ").append(n.get("batch").asLong()).append(" |");
      for (var x : n.get("kept_per_rank")) {
        b.append(' ').append(x.asLong()).append(" |");
      }
      b.append(
          String.format(
              Locale.ROOT,
              " %.2f | %.2f | %.2f%% |%n",
              n.get("rank_imbalance").asDouble(),
              n.get("expert_imbalance").asDouble(),
              100 * n.get("drop_rate").asDouble()));
    }
    return b.toString();
  }
}
