package io.moeprep.app.job;

import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code moeprep demo}: generate, permute, unpermute, verify and stats on a small default, into one
 * directory it owns (and replaces on every run).
 */
@Command(
    name = "demo",
    header =
        "generate, permute, unpermute, verify and stats on a small default (README's first"
            + " command)",
    customSynopsis = {
      "moeprep demo [--out moeprep-out] [--tokens 4096] [--hidden 256] [--dtype bf16] [--top-k 4]",
      "    [--experts 16] [--ep-size 4] [--tokens-per-batch 1024] [--score sigmoid] [--groups 4]",
      "    [--topk-groups 2] [--skew 0.5] [--capacity-factor 1.25] [--layout rows] [--backend auto]",
      "    [--seed 42]"
    },
    description = {
      "Runs the whole job on generated data and prints a summary and where the chart is:",
      "  DIR/tokens     generate: N tokens, DeepSeek-V3-style routing (sigmoid scores, top-2",
      "                 of 4 expert groups, top-4 of 16 experts), Zipf skew 0.5",
      "  DIR/permuted   permute over 4 EP ranks, capacity factor 1.25 (drops hot experts' excess)",
      "  DIR/combined   unpermute with identity experts",
      "                 verify: every batch recomputed with the kernels and compared",
      "  DIR/stats      stats: expert_load.png, report.md, stats.json",
      "DIR (default moeprep-out) is replaced on every run."
    })
final class DemoCommand implements JobCommand {
  @Option(
      names = "--out",
      paramLabel = "DIR",
      description = "output directory (default moeprep-out)")
  String out = "moeprep-out";

  @Mixin TokenTableOptions table = new TokenTableOptions();

  @Option(names = "--experts", paramLabel = "E", description = "experts (default 16)")
  Integer experts;

  @Option(names = "--ep-size", paramLabel = "R", description = "expert-parallel ranks (default 4)")
  int epSize = 4;

  @Option(names = "--score", paramLabel = "S", description = "softmax or sigmoid (default sigmoid)")
  Router.Scoring score = Router.Scoring.SIGMOID;

  @Option(
      names = "--groups",
      paramLabel = "G",
      description = "expert groups (default 4; 1 with --experts)")
  Integer groups;

  @Option(
      names = "--topk-groups",
      paramLabel = "TG",
      description = "groups kept per token (default 2 of 4 groups, else all)")
  Integer topkGroups;

  @Option(
      names = "--capacity-factor",
      paramLabel = "F",
      description = "per-expert capacity factor (default 1.25; 0 = no capacity)")
  double capacityFactor = 1.25;

  @Option(names = "--layout", paramLabel = "L", description = "rows or packed (default rows)")
  String layout = "rows";

  @Option(names = "--backend", paramLabel = "B", description = "auto, cpu or cuda (default auto)")
  BackendChoice backend = BackendChoice.AUTO;

  @Mixin HelpOption help;

  final GenerateCommand generate = new GenerateCommand();
  final PermuteCommand permute = new PermuteCommand();
  final UnpermuteCommand unpermute = new UnpermuteCommand();
  final VerifyCommand verify = new VerifyCommand();
  final StatsCommand stats = new StatsCommand();

  /** Sets the five steps' options from the demo's, and checks them all. */
  @Override
  public void validate() {
    if (out.endsWith("/")) {
      out = out.substring(0, out.length() - 1);
    }
    generate.out = out + "/tokens";
    generate.force = true;
    generate.table = table;
    generate.experts = experts == null ? 16 : experts;
    generate.score = score;
    generate.groups = groups != null ? groups : experts != null ? 1 : 4;
    generate.topkGroups =
        topkGroups != null ? topkGroups : generate.groups == 4 ? 2 : generate.groups;
    permute.input = generate.out;
    permute.out = out + "/permuted";
    permute.force = true;
    permute.epSize = epSize;
    OptionChecks.inRange("--capacity-factor", capacityFactor, 0, 1e6);
    permute.capacityFactor = capacityFactor > 0 ? capacityFactor : null;
    permute.layout = layout;
    permute.backend = backend;
    unpermute.permuted.dir = permute.out;
    unpermute.out = out + "/combined";
    unpermute.force = true;
    verify.permuted.dir = permute.out;
    verify.combined = unpermute.out;
    verify.batches = 0;
    stats.permuted.dir = permute.out;
    stats.out = out + "/stats";
    stats.force = true;
    for (JobCommand step : steps()) {
      step.validate();
    }
  }

  private JobCommand[] steps() {
    return new JobCommand[] {generate, permute, unpermute, verify, stats};
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    List<String> times = new ArrayList<>();
    JobCommand[] steps = steps();
    String[] names = {"generate", "permute", "unpermute", "verify", "stats"};
    for (int i = 0; i < steps.length; i++) {
      long s = System.nanoTime();
      Progress p = new Progress(ctx.err, names[i], 3000, ctx.spark.sparkContext());
      ctx.spark.sparkContext().addSparkListener(p);
      int code;
      try {
        steps[i].checkPaths(ctx.hadoop()); // the outputs of the steps before exist now
        code = steps[i].run(new JobContext(ctx.spark, ctx.out, ctx.err, p, false));
      } finally {
        ctx.spark.sparkContext().removeSparkListener(p);
      }
      times.add(String.format(Locale.ROOT, "%s %.1f s", names[i], (System.nanoTime() - s) / 1e9));
      if (code != 0) {
        ctx.out.println("demo: FAILED at " + names[i]);
        return code;
      }
    }
    double total = (System.nanoTime() - start) / 1e9;
    ctx.out.printf(Locale.ROOT, "demo: done in %.1f s (%s)%n", total, String.join(", ", times));
    ctx.out.println("demo: outputs in " + out + "/ (tokens, permuted, combined, stats)");
    ctx.out.println("demo: chart " + stats.last.chart());
    return 0;
  }
}
