package io.moeprep.app.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.exec.BatchCounters;
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

  @Mixin TokenTableOptions table = new TokenTableOptions();

  @Option(names = "--experts", paramLabel = "E", description = "experts (default 16)")
  int experts = 16;

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
      names = "--no-normalize",
      description = "keep the raw scores as probs (default: normalised over K)")
  boolean noNormalize;

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
    table.validate();
    OptionChecks.inRange("--experts", experts, 1, 1 << 20);
    OptionChecks.inRange("--groups", groups, 1, experts);
    if (topkGroups == null) {
      topkGroups = groups;
    }
    OptionChecks.inRange("--topk-groups", topkGroups, 1, groups);
    if (partitions != null) {
      OptionChecks.inRange("--partitions", partitions, 1, 1 << 20);
    }
    router =
        new Router(
            experts, table.topK, score, groups, topkGroups, table.skew, !noNormalize, table.seed);
  }

  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    OutputDir.checkAvailable(hadoop, out, "--out", force);
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    int cores = ctx.spark.sparkContext().defaultParallelism();
    long rowBytes = table.dtype.rowBytes(table.hidden) + 8L * table.topK + 32;
    long bySize = (table.tokens * rowBytes + (64 << 20) - 1) / (64 << 20); // about 64 MiB per file
    int p =
        partitions != null
            ? partitions
            : (int) Math.max(1, Math.min(Math.max(cores, bySize), Math.max(1, table.tokens / 256)));
    TokenGenerator gen =
        new TokenGenerator(
            table.tokens, p, table.hidden, table.dtype, table.tokensPerBatch, router, table.seed);
    long[] written;
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force);
        Progress.Step step = ctx.progress.step("write tokens")) {
      Dataset<Row> rows =
          ctx.spark.range(0, p, 1, p).mapPartitions(gen, Encoders.row(TokenGenerator.SCHEMA));
      rows.write().options(MoePrep.PARQUET_OPTIONS).parquet(dir.path(""));
      step.done();
      ObjectNode m = manifest(p, (System.nanoTime() - start) / 1e9);
      m.put(OutputDir.GENERATION, dir.generation());
      dir.writeText(MANIFEST, Json.write(m));
      dir.commit();
      written = JobContext.filesAndBytes(ctx.hadoop(), dir.path(""));
    }
    long batches = table.batches();
    ctx.out.printf(
        Locale.ROOT,
        "generate: %d tokens in %d batches (H=%d %s, top-%d of %d experts, %s%s, skew %.2f, seed"
            + " %d) -> %s%n",
        table.tokens,
        batches,
        table.hidden,
        table.dtype.cliName(),
        table.topK,
        experts,
        score.name().toLowerCase(Locale.ROOT),
        groups > 1 ? ", " + topkGroups + " of " + groups + " groups" : "",
        table.skew,
        table.seed,
        out);
    if (ctx.summary) {
      ctx.out.printf(
          Locale.ROOT,
          "generate: %d tokens, %d batches, %d partitions, %d files, %s in %.1f s%n",
          table.tokens,
          batches,
          p,
          written[0],
          BatchCounters.bytes(written[1]),
          (System.nanoTime() - start) / 1e9);
    }
    return 0;
  }

  /**
   * The files of the token table in {@code dir}: the generation its {@value #MANIFEST} names (see
   * {@link OutputDir}), else {@code dir} itself (any Parquet table).
   *
   * @param manifest the table's {@value #MANIFEST}, or null
   */
  static String tablePath(String dir, JsonNode manifest) {
    return OutputDir.datasetPath(dir, manifest, "");
  }

  /** {@link #tablePath(String, JsonNode)}, reading the manifest when there is one. */
  static String tablePath(Configuration hadoop, String dir) throws IOException {
    org.apache.hadoop.fs.Path gm = new org.apache.hadoop.fs.Path(dir, MANIFEST);
    return gm.getFileSystem(hadoop).exists(gm)
        ? tablePath(dir, Json.read(hadoop, dir, MANIFEST, "--input"))
        : dir;
  }

  private ObjectNode manifest(int p, double seconds) {
    ObjectNode m = Json.object();
    m.put("command", "generate");
    m.put("version", JobMain.VERSION);
    m.put("created", java.time.Instant.now().toString());
    m.put("tokens", table.tokens);
    m.put("hidden", table.hidden);
    m.put("dtype", table.dtype.cliName());
    m.put("top_k", table.topK);
    m.put("experts", experts);
    m.put("tokens_per_batch", table.tokensPerBatch);
    m.put("batches", table.batches());
    ObjectNode r = m.putObject("router");
    r.put("score", score.name().toLowerCase(Locale.ROOT));
    r.put("groups", groups);
    r.put("topk_groups", topkGroups);
    r.put("skew", table.skew);
    r.put("normalize", !noNormalize);
    r.put("features", Router.FEATURES);
    m.put("seed", table.seed);
    m.put("partitions", p);
    m.put("schema", TokenGenerator.SCHEMA.simpleString());
    m.putObject("timings_s").put("total", seconds);
    return m;
  }
}
