package io.moeprep.app.job;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * {@code moeprep demo}: generate, permute, unpermute, verify and stats on a small default, into one
 * directory it owns (and replaces on every run).
 */
final class DemoCommand implements Command.Runner {
  static final Command COMMAND =
      new Command(
          "demo",
          "generate, permute, unpermute, verify and stats on a small default (README's first"
              + " command)",
          """
          usage: moeprep demo [--out DIR] [options]

          Runs the whole job on generated data and prints a summary and where the chart is:
            DIR/tokens     generate: N tokens, DeepSeek-V3-style routing (sigmoid scores, top-2
                           of 4 expert groups, top-4 of 16 experts), Zipf skew 0.5
            DIR/permuted   permute over 4 EP ranks, capacity factor 1.25 (drops hot experts' excess)
            DIR/combined   unpermute with identity experts
                           verify: every batch recomputed with the kernels and compared
            DIR/stats      stats: expert_load.png, report.md, stats.json
          DIR (default moeprep-out) is replaced on every run.

          options (defaults in brackets):
            --out DIR [moeprep-out]   --tokens N [4096]        --hidden H [256]
            --dtype D [bf16]          --top-k K [4]            --experts E [16]
            --ep-size R [4]           --tokens-per-batch T [1024]
            --score S [sigmoid]       --groups G [4]           --topk-groups TG [2]
            --skew S [0.5]            --capacity-factor F [1.25, 0 = no capacity]
            --layout L [rows]         --backend B [auto]       --seed S [42]
          """,
          Set.of(
              "out",
              "tokens",
              "hidden",
              "dtype",
              "top-k",
              "experts",
              "ep-size",
              "tokens-per-batch",
              "score",
              "groups",
              "topk-groups",
              "skew",
              "capacity-factor",
              "layout",
              "backend",
              "seed"),
          Set.of(),
          DemoCommand::new);

  final String out;
  final GenerateCommand generate;
  final PermuteCommand permute;
  final UnpermuteCommand unpermute;
  final VerifyCommand verify;
  final StatsCommand stats;

  DemoCommand(Args a) {
    String dir = a.str("out", "moeprep-out");
    out = dir.endsWith("/") ? dir.substring(0, dir.length() - 1) : dir;
    List<String> g = new ArrayList<>(List.of("--out", out + "/tokens", "--force"));
    opt(a, g, "tokens", "4096");
    opt(a, g, "hidden", "256");
    opt(a, g, "dtype", "bf16");
    opt(a, g, "top-k", "4");
    opt(a, g, "experts", "16");
    opt(a, g, "tokens-per-batch", "1024");
    opt(a, g, "score", "sigmoid");
    String groups = a.str("groups", a.has("experts") ? "1" : "4");
    g.addAll(List.of("--groups", groups));
    g.addAll(List.of("--topk-groups", a.str("topk-groups", groups.equals("4") ? "2" : groups)));
    opt(a, g, "skew", "0.5");
    opt(a, g, "seed", "42");
    generate = new GenerateCommand(parse(GenerateCommand.COMMAND, g));
    List<String> p =
        new ArrayList<>(List.of("--input", out + "/tokens", "--out", out + "/permuted", "--force"));
    opt(a, p, "ep-size", "4");
    double cf = a.real("capacity-factor", 1.25, 0, 1e6);
    if (cf > 0) {
      p.addAll(List.of("--capacity-factor", Double.toString(cf)));
    }
    opt(a, p, "layout", "rows");
    opt(a, p, "backend", "auto");
    permute = new PermuteCommand(parse(PermuteCommand.COMMAND, p));
    unpermute =
        new UnpermuteCommand(
            parse(
                UnpermuteCommand.COMMAND,
                List.of("--permuted", out + "/permuted", "--out", out + "/combined", "--force")));
    verify =
        new VerifyCommand(
            parse(
                VerifyCommand.COMMAND,
                List.of(
                    "--permuted",
                    out + "/permuted",
                    "--combined",
                    out + "/combined",
                    "--batches",
                    "0")));
    stats =
        new StatsCommand(
            parse(
                StatsCommand.COMMAND,
                List.of("--permuted", out + "/permuted", "--out", out + "/stats", "--force")));
  }

  private static void opt(Args a, List<String> to, String name, String def) {
    to.add("--" + name);
    to.add(a.str(name, def));
  }

  private static Args parse(Command c, List<String> argv) {
    String[] arr = new String[argv.size() + 1];
    arr[0] = c.name();
    for (int i = 0; i < argv.size(); i++) {
      arr[i + 1] = argv.get(i);
    }
    return Args.parse(c.name(), arr, 1, c.options(), c.flags());
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    List<String> times = new ArrayList<>();
    Command.Runner[] steps = {generate, permute, unpermute, verify, stats};
    String[] names = {"generate", "permute", "unpermute", "verify", "stats"};
    for (int i = 0; i < steps.length; i++) {
      long s = System.nanoTime();
      Progress p = new Progress(ctx.err, names[i], 3000, ctx.spark.sparkContext());
      ctx.spark.sparkContext().addSparkListener(p);
      int code;
      try {
        code = steps[i].run(new JobContext(ctx.spark, ctx.out, ctx.err, p));
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
