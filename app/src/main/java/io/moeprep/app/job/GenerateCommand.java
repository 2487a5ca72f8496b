package io.moeprep.app.job;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.DTypeOption;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.DType;
import io.moeprep.spark.api.MoePrep;
import java.io.IOException;
import java.util.Locale;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code moeprep generate}: the synthetic token table. */
@Command(
    name = "generate",
    header =
        "write a synthetic token table (Parquet) with router decisions from a real routing rule",
    customSynopsis = {
      "moeprep generate --out DIR [--tokens N] [--hidden H] [--dtype D] [--top-k K] [--experts E]",
      "    [--tokens-per-batch T] [--score softmax|sigmoid] [--groups G] [--topk-groups TG]",
      "    [--skew S] [--no-normalize] [--seed S] [--partitions P] [--force]"
    },
    description = {
      "Writes a Parquet table of N tokens: token_id (long), batch (long, token_id / T),",
      "hidden (binary: H little-endian elements of the dtype), expert_ids (array<int>, K",
      "distinct experts by descending score) and probs (array<float>), plus DIR/_manifest.json.",
      "Router: logits = x W + b from a 32-element token feature vector x (the first hidden",
      "values) and a seeded random W; softmax or sigmoid scores; optional group-limited top-k",
      "(DeepSeek-V3: --groups groups of experts, the --topk-groups groups with the largest sum",
      "of their two best scores stay eligible); top-k; probs normalised over the K chosen.",
      "The bias b makes load Zipf-like with exponent --skew over a seeded expert order.",
      "The same seed gives the same table, on any number of partitions."
    })
final class GenerateCommand implements JobCommand {
  static final String MANIFEST = "_manifest.json";

  @Option(
      names = "--out",
      paramLabel = "DIR",
      required = true,
      description = "output directory (required; appears only when complete)")
  String out;

  @Option(names = "--tokens", paramLabel = "N", description = "tokens (default 4096)")
  long tokens = 4096;

  @Option(names = "--hidden", paramLabel = "H", description = "elements per token (default 256)")
  int hidden = 256;

  @Option(
      names = "--dtype",
      paramLabel = "D",
      converter = DTypeOption.class,
      description = "f32, bf16, f16, fp8e4m3, fp8e5m2 (default bf16)")
  DType dtype = DType.BF16;

  @Option(names = "--top-k", paramLabel = "K", description = "experts per token (default 4)")
  int topK = 4;

  @Option(names = "--experts", paramLabel = "E", description = "experts (default 16)")
  int experts = 16;

  @Option(
      names = "--tokens-per-batch",
      paramLabel = "T",
      description = "tokens per batch (default 1024)")
  int tokensPerBatch = 1024;

  @Option(names = "--score", paramLabel = "S", description = "softmax or sigmoid (default softmax)")
  Router.Scoring score = Router.Scoring.SOFTMAX;

  @Option(
      names = "--groups",
      paramLabel = "G",
      description = "expert groups for group-limited top-k (default 1: off)")
  int groups = 1;

  @Option(
      names = "--topk-groups",
      paramLabel = "TG",
      description = "groups kept per token (default: all G)")
  Integer topkGroups;

  @Option(
      names = "--skew",
      paramLabel = "S",
      description = "Zipf exponent of expert popularity, 0 = balanced (default 0.5)")
  double skew = 0.5;

  @Option(
      names = "--no-normalize",
      description = "keep the raw scores as probs (default: normalised over K)")
  boolean noNormalize;

  @Option(names = "--seed", paramLabel = "S", description = "random seed (default 42)")
  long seed = 42;

  @Option(
      names = "--partitions",
      paramLabel = "P",
      description = "Spark partitions (default: from N and the cores)")
  Integer partitions;

  @Option(names = "--force", description = "replace DIR if it exists")
  boolean force;

  @Mixin HelpOption help;

  Router router;

  @Override
  public void validate() {
    OptionChecks.inRange("--tokens", tokens, 0, 1L << 40);
    OptionChecks.inRange("--hidden", hidden, 1, Integer.MAX_VALUE);
    OptionChecks.inRange("--top-k", topK, 1, 1024);
    OptionChecks.inRange("--experts", experts, 1, 1 << 20);
    OptionChecks.inRange("--tokens-per-batch", tokensPerBatch, 1, Integer.MAX_VALUE);
    OptionChecks.inRange("--groups", groups, 1, experts);
    if (topkGroups == null) {
      topkGroups = groups;
    }
    OptionChecks.inRange("--topk-groups", topkGroups, 1, groups);
    OptionChecks.inRange("--skew", skew, 0, 100);
    if (partitions != null) {
      OptionChecks.inRange("--partitions", partitions, 1, 1 << 20);
    }
    if (dtype.rowBytes(hidden) > Integer.MAX_VALUE - 64) {
      throw new IllegalArgumentException(
          "--hidden " + hidden + " is too large: one token must fit in a Spark binary value");
    }
    router = new Router(experts, topK, score, groups, topkGroups, skew, !noNormalize, seed);
  }

  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    OutputDir.checkAvailable(hadoop, out, "--out", force);
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    int cores = ctx.spark.sparkContext().defaultParallelism();
    long rowBytes = dtype.rowBytes(hidden) + 8L * topK + 32;
    long bySize = (tokens * rowBytes + (64 << 20) - 1) / (64 << 20); // about 64 MiB per file
    int p =
        partitions != null
            ? partitions
            : (int) Math.max(1, Math.min(Math.max(cores, bySize), Math.max(1, tokens / 256)));
    TokenGenerator gen = new TokenGenerator(tokens, p, hidden, dtype, tokensPerBatch, router, seed);
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force);
        Progress.Step step = ctx.progress.step("write tokens")) {
      Dataset<Row> table =
          ctx.spark.range(0, p, 1, p).mapPartitions(gen, Encoders.row(TokenGenerator.SCHEMA));
      table.write().options(MoePrep.PARQUET_OPTIONS).parquet(dir.path(""));
      step.done();
      ObjectNode m = manifest(p, (System.nanoTime() - start) / 1e9);
      dir.writeText(MANIFEST, Json.write(m));
      dir.commit();
    }
    long batches = (tokens + tokensPerBatch - 1) / tokensPerBatch;
    ctx.out.printf(
        Locale.ROOT,
        "generate: %d tokens in %d batches (H=%d %s, top-%d of %d experts, %s%s, skew %.2f, seed"
            + " %d) -> %s%n",
        tokens,
        batches,
        hidden,
        dtype.cliName(),
        topK,
        experts,
        score.name().toLowerCase(Locale.ROOT),
        groups > 1 ? ", " + topkGroups + " of " + groups + " groups" : "",
        skew,
        seed,
        out);
    return 0;
  }

  private ObjectNode manifest(int p, double seconds) {
    ObjectNode m = Json.object();
    m.put("command", "generate");
    m.put("version", JobMain.VERSION);
    m.put("created", java.time.Instant.now().toString());
    m.put("tokens", tokens);
    m.put("hidden", hidden);
    m.put("dtype", dtype.cliName());
    m.put("top_k", topK);
    m.put("experts", experts);
    m.put("tokens_per_batch", tokensPerBatch);
    m.put("batches", (tokens + tokensPerBatch - 1) / tokensPerBatch);
    ObjectNode r = m.putObject("router");
    r.put("score", score.name().toLowerCase(Locale.ROOT));
    r.put("groups", groups);
    r.put("topk_groups", topkGroups);
    r.put("skew", skew);
    r.put("normalize", !noNormalize);
    r.put("features", Router.FEATURES);
    m.put("seed", seed);
    m.put("partitions", p);
    m.put("schema", TokenGenerator.SCHEMA.simpleString());
    m.putObject("timings_s").put("total", seconds);
    return m;
  }
}
