package io.moeprep.app.job;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.kernels.DType;
import io.moeprep.spark.api.MoePrep;
import java.util.Locale;
import java.util.Set;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;

/** {@code moeprep generate}: the synthetic token table. */
final class GenerateCommand implements Command.Runner {
  static final String MANIFEST = "_manifest.json";

  static final Command COMMAND =
      new Command(
          "generate",
          "write a synthetic token table (Parquet) with router decisions from a real routing rule",
          """
          usage: moeprep generate --out DIR [options]

          Writes a Parquet table of N tokens: token_id (long), batch (long, token_id / T),
          hidden (binary: H little-endian elements of the dtype), expert_ids (array<int>, K
          distinct experts by descending score) and probs (array<float>), plus DIR/_manifest.json.
          Router: logits = x W + b from a 32-element token feature vector x (the first hidden
          values) and a seeded random W; softmax or sigmoid scores; optional group-limited top-k
          (DeepSeek-V3: --groups groups of experts, the --topk-groups groups with the largest sum
          of their two best scores stay eligible); top-k; probs normalised over the K chosen.
          The bias b makes load Zipf-like with exponent --skew over a seeded expert order.
          The same seed gives the same table, on any number of partitions.

          options:
            --out DIR              output directory (required; appears only when complete)
            --tokens N             tokens (default 4096)
            --hidden H             elements per token (default 256)
            --dtype D              f32, bf16, f16, fp8e4m3, fp8e5m2 (default bf16)
            --top-k K              experts per token (default 4)
            --experts E            experts (default 16)
            --tokens-per-batch T   tokens per batch (default 1024)
            --score S              softmax or sigmoid (default softmax)
            --groups G             expert groups for group-limited top-k (default 1: off)
            --topk-groups TG       groups kept per token (default: all G)
            --skew S               Zipf exponent of expert popularity, 0 = balanced (default 0.5)
            --no-normalize         keep the raw scores as probs (default: normalised over K)
            --seed S               random seed (default 42)
            --partitions P         Spark partitions (default: from N and the cores)
            --force                replace DIR if it exists
          """,
          Set.of(
              "out",
              "tokens",
              "hidden",
              "dtype",
              "top-k",
              "experts",
              "tokens-per-batch",
              "score",
              "groups",
              "topk-groups",
              "skew",
              "seed",
              "partitions"),
          Set.of("no-normalize", "force"),
          GenerateCommand::new);

  final String out;
  final long tokens;
  final int hidden;
  final DType dtype;
  final int topK;
  final int experts;
  final int tokensPerBatch;
  final String score;
  final int groups;
  final int topkGroups;
  final double skew;
  final boolean normalize;
  final long seed;
  final int partitions;
  final boolean force;
  final Router router;

  GenerateCommand(Args a) {
    out = a.required("out", "DIR");
    tokens = a.longValue("tokens", 4096, 0, 1L << 40);
    hidden = a.integer("hidden", 256, 1, Integer.MAX_VALUE);
    try {
      dtype = DType.parse(a.str("dtype", "bf16"));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("--" + e.getMessage());
    }
    topK = a.integer("top-k", 4, 1, 1024);
    experts = a.integer("experts", 16, 1, 1 << 20);
    tokensPerBatch = a.integer("tokens-per-batch", 1024, 1, Integer.MAX_VALUE);
    score = a.choice("score", "softmax", "softmax", "sigmoid");
    groups = a.integer("groups", 1, 1, experts);
    topkGroups = a.integer("topk-groups", groups, 1, groups);
    skew = a.real("skew", 0.5, 0, 100);
    normalize = !a.flag("no-normalize");
    seed = a.longValue("seed", 42, Long.MIN_VALUE, Long.MAX_VALUE);
    partitions = a.integer("partitions", 0, 1, 1 << 20);
    force = a.flag("force");
    if ((long) hidden * dtype.bytes() > Integer.MAX_VALUE - 64) {
      throw new IllegalArgumentException(
          "--hidden " + hidden + " is too large: one token must fit in a Spark binary value");
    }
    router =
        new Router(
            experts,
            topK,
            score.equals("sigmoid") ? Router.Scoring.SIGMOID : Router.Scoring.SOFTMAX,
            groups,
            topkGroups,
            skew,
            normalize,
            seed);
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    int cores = ctx.spark.sparkContext().defaultParallelism();
    long rowBytes = (long) hidden * dtype.bytes() + 8L * topK + 32;
    long bySize = (tokens * rowBytes + (64 << 20) - 1) / (64 << 20); // about 64 MiB per file
    int p =
        partitions > 0
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
        score,
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
    r.put("score", score);
    r.put("groups", groups);
    r.put("topk_groups", topkGroups);
    r.put("skew", skew);
    r.put("normalize", normalize);
    r.put("features", Router.FEATURES);
    m.put("seed", seed);
    m.put("partitions", p);
    m.put("schema", TokenGenerator.SCHEMA.simpleString());
    m.putObject("timings_s").put("total", seconds);
    return m;
  }
}
