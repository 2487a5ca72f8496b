package io.moeprep.app.job;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.sum;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.CapacityOptions;
import io.moeprep.app.cli.DTypeOption;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.MoePrepCommandLine;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.conf.MoePrepConf;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.spec.BadRowPolicy;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.util.CollectionAccumulator;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code moeprep permute}: token table in, permuted Parquet per EP rank out. */
@Command(
    name = "permute",
    header = "permute a token table per EP rank (dispatch): Parquet in, Parquet per rank out",
    customSynopsis = {
      "moeprep permute --input TOKENS --out DIR --ep-size R [--experts E] [--hidden H]",
      "    [--dtype D] [--top-k K] [--placement r0,r1,...] [--num-out M | --capacity C |",
      "    --capacity-factor F] [--pad-to-capacity] [--align A] [--tokens-per-batch T]",
      "    [--layout rows|packed] [--dispatch all_to_all|all_gather] [--partitioning batch|rank]",
      "    [--backend auto|cpu|cuda] [--format parquet|safetensors]",
      "    [--max-block-bytes B] [--chunk-bytes B] [--bad-rows fail|skip] [--force]"
    },
    description = {
      "Reads a token table (token_id, hidden as binary or array<float>, expert_ids, optional",
      "probs and batch) and writes, partitioned by ep_rank (DIR/<part>/ep_rank=r/):",
      "  DIR/data               the permuted tokens (layout rows or packed), or with --format",
      "                         safetensors one file per (rank, batch):",
      "                         DIR/data/rank=R/batch=B.safetensors",
      "  DIR/row_map            the output row of every slot, per (rank, batch, token)",
      "  DIR/tokens_per_expert  kept and dropped slots and the segment per (rank, batch, expert)",
      "  DIR/bad_rows           with --bad-rows skip: the skipped rows (token_id, batch,",
      "                         reason)",
      "  DIR/manifest.json      inputs, options, backend per rank, tokens per expert, dropped",
      "                         slots, bad rows and timings",
      "The datasets lie in DIR/generation=ID/, the generation the manifest names; the manifest is",
      "written last: DIR has it only when complete. --experts, --hidden, --dtype and --top-k",
      "default to the values in TOKENS/_manifest.json when TOKENS was written by moeprep",
      "generate."
    })
final class PermuteCommand implements JobCommand {
  static final String MANIFEST = "manifest.json";

  @Option(
      names = "--input",
      paramLabel = "TOKENS",
      required = true,
      description = "input token table (Parquet; required)")
  String input;

  @Option(
      names = "--out",
      paramLabel = "DIR",
      required = true,
      description = "output directory (required)")
  String out;

  @Option(
      names = "--ep-size",
      paramLabel = "R",
      description = "expert-parallel ranks (required unless --placement)")
  Integer epSize;

  @Option(names = "--experts", paramLabel = "E", description = "experts")
  Integer experts;

  @Option(names = "--hidden", paramLabel = "H", description = "elements per token")
  Integer hidden;

  @Option(
      names = "--dtype",
      paramLabel = "D",
      converter = DTypeOption.class,
      description = "f32, bf16, f16, fp8e4m3, fp8e5m2")
  DType dtype;

  @Option(names = "--top-k", paramLabel = "K", description = "slots per token")
  Integer topK;

  @Option(
      names = "--placement",
      paramLabel = "LIST",
      description = "rank of each expert, comma separated (default: contiguous)")
  String placement;

  @Mixin CapacityOptions capacity = new CapacityOptions();

  @Option(
      names = "--capacity-factor",
      paramLabel = "F",
      description = "capacity C = ceil(F * T * K / E), T = tokens per batch")
  Double capacityFactor;

  @Option(
      names = "--tokens-per-batch",
      paramLabel = "T",
      description = "tokens per batch (batch = token_id / T without a batch column)")
  Integer tokensPerBatch;

  @Option(
      names = "--layout",
      paramLabel = "L",
      description = "rows or packed (default: spark.moeprep.layout, rows)")
  String layout;

  @Option(
      names = "--dispatch",
      paramLabel = "D",
      description = "all_to_all or all_gather (default: spark.moeprep.dispatch)")
  String dispatch;

  @Option(
      names = "--format",
      paramLabel = "F",
      description =
          "parquet (DIR/data as a table) or safetensors (one file per (rank, batch) with every"
              + " tensor, for trainers) (default: parquet)")
  String format;

  @Option(
      names = "--partitioning",
      paramLabel = "P",
      description =
          "batch (each batch permuted for every rank in one task: one shuffle by batch) or rank"
              + " (the all-to-all: one task per rank) (default: spark.moeprep.partitioning if set,"
              + " else batch; the outputs are the same)")
  String partitioning;

  @Option(
      names = "--backend",
      paramLabel = "B",
      description = "auto, cpu or cuda (default: spark.moeprep.backend, auto)")
  BackendChoice backend;

  @Option(
      names = "--max-block-bytes",
      paramLabel = "B",
      description = "largest packed block (default: spark.moeprep.packed.maxBlockBytes)")
  Long maxBlockBytes;

  @Option(
      names = "--chunk-bytes",
      paramLabel = "B",
      description = "hidden bytes per dispatch chunk (default: spark.moeprep.dispatch.chunkBytes)")
  Long chunkBytes;

  @Option(
      names = "--bad-rows",
      paramLabel = "P",
      description =
          "fail (a bad input row fails the job, naming its token id) or skip (left out, listed in"
              + " DIR/bad_rows, counted in the manifest) (default: spark.moeprep.badRows, fail)")
  String badRows;

  @Option(names = "--force", description = "replace DIR if it exists")
  boolean force;

  @Mixin HelpOption help;

  /** TOKENS/_manifest.json of moeprep generate, or null; read by {@link #checkPaths}. */
  private JsonNode gen;

  /** The token table's files: TOKENS, or the generation its manifest names. */
  private String table;

  /** The spec options given and taken from {@link #gen}; set by {@link #checkPaths}. */
  private Map<String, String> given;

  @Override
  public void validate() {
    if (epSize == null && placement == null) {
      throw new IllegalArgumentException(
          "option --ep-size is missing: give --ep-size R (or --placement r0,r1,...)");
    }
    capacity.check("--capacity-factor F", capacityFactor != null);
    if (epSize != null) {
      OptionChecks.inRange("--ep-size", epSize, 1, 1 << 20);
    }
    for (Object[] v :
        new Object[][] {
          {"--experts", experts},
          {"--hidden", hidden},
          {"--top-k", topK},
          {"--tokens-per-batch", tokensPerBatch}
        }) {
      if (v[1] != null) {
        OptionChecks.inRange((String) v[0], (Integer) v[1], 1, Integer.MAX_VALUE);
      }
    }
    if (capacityFactor != null) {
      OptionChecks.inRange("--capacity-factor", capacityFactor, 0, 1e6);
    }
    if (layout != null) {
      layout = OptionChecks.oneOf("--layout", layout, "rows", "packed");
    }
    if (dispatch != null) {
      dispatch = OptionChecks.oneOf("--dispatch", dispatch, "all_to_all", "all_gather");
    }
    if (badRows != null) {
      badRows = OptionChecks.oneOf("--bad-rows", badRows, "fail", "skip");
    }
    if (partitioning != null) {
      partitioning = OptionChecks.oneOf("--partitioning", partitioning, "batch", "rank");
    }
    format =
        format == null
            ? "parquet"
            : OptionChecks.oneOf("--format", format, "parquet", "safetensors");
  }

  /**
   * Checks that the input exists and the output does not; reads the input's generate manifest and
   * builds the spec options from it and the arguments (checked by {@link PermuteSpec#fromOptions}).
   */
  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    JobContext.requireExists(hadoop, input, "--input");
    OutputDir.checkAvailable(hadoop, out, "--out", force);
    org.apache.hadoop.fs.Path gm = new org.apache.hadoop.fs.Path(input, GenerateCommand.MANIFEST);
    gen =
        gm.getFileSystem(hadoop).exists(gm)
            ? Json.read(hadoop, input, GenerateCommand.MANIFEST, "--input")
            : null;
    table = GenerateCommand.tablePath(input, gen);
    given = specOptions(gen);
    PermuteSpec.fromOptions(given);
  }

  /** The spec options ({@link PermuteSpec#fromOptions} keys) from the arguments and the input. */
  Map<String, String> specOptions(JsonNode gen) {
    Map<String, String> o = new LinkedHashMap<>();
    int e = intFrom(experts, "experts", "experts", gen, "E");
    o.put("numExperts", Integer.toString(e));
    if (placement != null) {
      o.put("placement", placement);
      if (epSize != null) {
        o.put("epSize", Integer.toString(epSize));
      }
    } else {
      if (e % epSize != 0) {
        throw new IllegalArgumentException(
            "--experts "
                + e
                + " is not a multiple of --ep-size "
                + epSize
                + ": change one, or give --placement with one rank per expert");
      }
      o.put("epSize", Integer.toString(epSize));
    }
    o.put("hidden", Integer.toString(intFrom(hidden, "hidden", "hidden", gen, "H")));
    o.put("dtype", dtype != null ? dtype.cliName() : text(gen, "dtype", "dtype", "D"));
    int k = intFrom(topK, "top-k", "top_k", gen, "K");
    o.put("topK", Integer.toString(k));
    Long c = capacity.capacity();
    if (capacityFactor != null) {
      int t = intFrom(tokensPerBatch, "tokens-per-batch", "tokens_per_batch", gen, "T");
      c = (long) Math.ceil(capacityFactor * t * k / e);
    }
    putIfGiven(o, "capacity", CapacityOptions.optionValue(capacity.policy(c)));
    if (capacity.alignGiven()) {
      o.put("align", Integer.toString(capacity.align()));
    }
    if (tokensPerBatch != null) {
      o.put("tokensPerBatch", Integer.toString(tokensPerBatch));
    } else if (gen != null && gen.has("tokens_per_batch")) {
      o.put("tokensPerBatch", gen.get("tokens_per_batch").asText());
    }
    putIfGiven(o, "layout", layout);
    putIfGiven(o, "dispatch", dispatch);
    putIfGiven(o, "partitioning", partitioning);
    putIfGiven(o, "backend", backend == null ? null : backend.name().toLowerCase(Locale.ROOT));
    putIfGiven(o, "maxBlockBytes", maxBlockBytes);
    putIfGiven(o, "chunkBytes", chunkBytes);
    putIfGiven(o, "badRows", badRows);
    return o;
  }

  private static void putIfGiven(Map<String, String> o, String key, Object value) {
    if (value != null) {
      o.put(key, value.toString());
    }
  }

  private static int intFrom(Integer given, String option, String key, JsonNode gen, String meta) {
    return given != null ? given : Integer.parseInt(text(gen, option, key, meta));
  }

  private static String text(JsonNode gen, String option, String key, String meta) {
    if (gen != null && gen.has(key)) {
      return gen.get(key).asText();
    }
    throw new IllegalArgumentException(
        "option --"
            + option
            + " is missing: give --"
            + option
            + " "
            + meta
            + " (--input has no "
            + GenerateCommand.MANIFEST
            + " from moeprep generate to take it from)");
  }

  /** The resolved spec as {@link PermuteSpec#fromOptions} options, for the manifest. */
  static Map<String, String> resolvedOptions(PermuteSpec s, Map<String, String> given) {
    Map<String, String> o = new LinkedHashMap<>(given);
    o.put("tokensPerBatch", Integer.toString(s.shape().tokensPerBatch()));
    o.put("dispatch", s.settings().dispatch().name().toLowerCase(Locale.ROOT));
    o.put("partitioning", s.settings().partitioning().name().toLowerCase(Locale.ROOT));
    o.put("layout", s.settings().layout().name().toLowerCase(Locale.ROOT));
    o.put("backend", s.settings().backend().name().toLowerCase(Locale.ROOT));
    o.put("maxBlockBytes", Long.toString(s.settings().maxBlockBytes()));
    o.put("chunkBytes", Long.toString(s.settings().chunkBytes()));
    o.put("badRows", s.settings().badRows().name().toLowerCase(Locale.ROOT));
    return o;
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    long start = System.nanoTime();
    if (!given.containsKey("partitioning")
        && ctx.spark.conf().get(MoePrepConf.PARTITIONING.key(), null) == null) {
      // the output is written per rank (ep_rank=R/): no consumer needs partition r to be rank r
      given.put("partitioning", "batch");
    }
    PermuteSpec spec = PermuteSpec.fromOptions(given).resolve(k -> ctx.spark.conf().get(k, null));
    int ranks = spec.shape().expertPlacement().numRanks();
    if (ctx.spark.conf().get("spark.sql.maxConcurrentOutputFileWriters", "0").equals("0")) {
      // partitionBy("ep_rank") writes each task's ranks through open writers, not after sorting
      // the task's rows by rank (past this many ranks Spark falls back to the sort)
      ctx.spark.conf().set("spark.sql.maxConcurrentOutputFileWriters", Math.min(ranks, 32));
    }
    Map<String, String> options = resolvedOptions(spec, given);
    ObjectNode timings = Json.object();
    Dataset<Row> tokens = ctx.spark.read().parquet(table);
    PermuteOutput perm = MoePrep.permute(tokens, spec);
    CollectionAccumulator<String> backends =
        ctx.spark.sparkContext().collectionAccumulator("moeprep.permute.backends");
    long badRows;
    // the output's lock first: a second run on DIR fails before any work
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force)) {
      try (Progress.Step s = ctx.progress.step("dispatch")) {
        // the dispatch (map tasks and the shuffle), cached for the three outputs
        perm.persist(StorageLevel.MEMORY_AND_DISK());
        timings.put("dispatch", s.done());
      }
      boolean shards = format.equals("safetensors");
      String what = shards ? "safetensors" : options.get("layout");
      try (Progress.Step s = ctx.progress.step("data (" + what + ")")) {
        if (shards) {
          perm.shards()
              .write()
              .format("moeprep-safetensors")
              .mode("overwrite")
              .save(dir.path("data"));
        } else {
          perm.data()
              .write()
              .options(MoePrep.PARQUET_OPTIONS)
              .partitionBy("ep_rank")
              .parquet(dir.path("data"));
        }
        timings.put("data", s.done());
      }
      try (Progress.Step s = ctx.progress.step("row map")) {
        perm.rowMap().write().partitionBy("ep_rank").parquet(dir.path("row_map"));
        timings.put("row_map", s.done());
      }
      try (Progress.Step s = ctx.progress.step("tokens per expert")) {
        perm.tokensPerExpert()
            .mapPartitions(
                new BackendProbe(spec.settings(), 0, backends),
                Encoders.row(Schemas.TOKENS_PER_EXPERT))
            .write()
            .partitionBy("ep_rank")
            .parquet(dir.path("tokens_per_expert"));
        timings.put("tokens_per_expert", s.done());
      }
      badRows = 0;
      if (spec.settings().badRows() == BadRowPolicy.SKIP) {
        try (Progress.Step s = ctx.progress.step("bad rows")) {
          perm.badRows().write().parquet(dir.path("bad_rows"));
          badRows = ctx.table(dir.path("bad_rows"), Schemas.BAD_ROWS).count();
          timings.put("bad_rows", s.done());
        }
      }
      ObjectNode m;
      try (Progress.Step s = ctx.progress.step("manifest")) {
        m = manifest(ctx, dir, spec, options, gen, backends.value());
        m.put("bad_rows", badRows);
        if (spec.settings().badRows() == BadRowPolicy.SKIP) {
          ((ObjectNode) m.get("outputs")).put("bad_rows", "bad_rows");
        }
        timings.put("manifest", s.done());
      }
      timings.put("total", (System.nanoTime() - start) / 1e9);
      m.set("timings_s", timings);
      dir.writeText(MANIFEST, Json.write(m));
      dir.commit();
      long dropped = m.get("dropped_slots").asLong();
      long slots = m.get("kept_slots").asLong() + dropped;
      ctx.out.printf(
          Locale.ROOT,
          "permute: %d tokens -> %d rows on %d ranks (%s, %s, backend %s), %d of %d slots dropped"
              + " (%.1f%%)%s -> %s%n",
          m.get("input").get("rows").asLong(),
          m.get("rows_out").asLong(),
          spec.shape().expertPlacement().numRanks(),
          options.get("layout"),
          options.get("dispatch") + " by " + options.get("partitioning"),
          backendSummary(m),
          dropped,
          slots,
          slots == 0 ? 0.0 : 100.0 * dropped / slots,
          spec.settings().badRows() == BadRowPolicy.SKIP
              ? ", " + badRows + " bad rows skipped"
              : "",
          out);
      if (ctx.summary) {
        BatchCounters c = perm.counters();
        ctx.out.printf(
            Locale.ROOT,
            "permute: %d rows, %s, %d ranks, %d rank batches (gpu %d, cpu %d), %d fallbacks, %d bad"
                + " rows in %.1f s%n",
            c.rows(),
            BatchCounters.bytes(c.bytes()),
            spec.shape().expertPlacement().numRanks(),
            c.gpuBatches() + c.cpuBatches(),
            c.gpuBatches(),
            c.cpuBatches(),
            c.fallbacks(),
            badRows,
            (System.nanoTime() - start) / 1e9);
      }
    } catch (Exception ex) {
      IllegalArgumentException bad = MoePrepCommandLine.badInput(ex);
      if (bad != null && !(ex instanceof IllegalArgumentException)) {
        throw new IllegalArgumentException(
            MoePrepCommandLine.firstLine(bad.getMessage())
                + " (check --hidden, --dtype, --top-k and --experts against the table in --input)",
            ex);
      }
      throw ex;
    } finally {
      perm.unpersist();
    }
    return 0;
  }

  /** Output rows per rank of a Parquet data table. */
  private static Map<Integer, Long> rowsPerRank(JobContext ctx, String data, Layout layout)
      throws IOException {
    Dataset<Row> d = ctx.table(data, JobContext.dataSchema(layout));
    Dataset<Row> perRank =
        layout == Layout.PACKED
            ? d.groupBy("ep_rank").agg(sum(col("rows").cast("long")))
            : d.groupBy("ep_rank").count();
    Map<Integer, Long> out = new TreeMap<>();
    for (Row r : perRank.collectAsList()) {
      out.put(r.getInt(0), r.isNullAt(1) ? 0L : r.getLong(1));
    }
    return out;
  }

  static String backendSummary(JsonNode m) {
    java.util.TreeSet<String> b = new java.util.TreeSet<>();
    for (JsonNode r : m.get("ranks")) {
      b.add(r.get("backend").asText());
    }
    return String.join("+", b);
  }

  private ObjectNode manifest(
      JobContext ctx,
      OutputDir dir,
      PermuteSpec spec,
      Map<String, String> options,
      JsonNode gen,
      List<String> backends)
      throws IOException {
    ExpertPlacement placement = spec.shape().expertPlacement();
    int e = spec.shape().numExperts();
    int ranks = placement.numRanks();
    ObjectNode m = Json.object();
    m.put("command", "permute");
    m.put("version", JobMain.VERSION);
    m.put("created", java.time.Instant.now().toString());
    ObjectNode in = m.putObject("input");
    in.put("path", input);
    in.put("rows", ctx.spark.read().parquet(table).count());
    if (gen != null) {
      in.set("generate", gen);
    }
    ObjectNode opts = m.putObject("options");
    options.forEach(opts::put);
    m.put(OutputDir.GENERATION, dir.generation());
    ObjectNode outs = m.putObject("outputs");
    outs.put("data", "data");
    outs.put("format", format);
    outs.put("row_map", "row_map");
    outs.put("tokens_per_expert", "tokens_per_expert");
    outs.put("partitioned_by", "ep_rank");
    // tokens per expert, summed over batches, from the written table (small: B x E rows)
    long[] kept = new long[e];
    long[] dropped = new long[e];
    java.util.Set<Long> batchIds = new java.util.HashSet<>();
    for (Row r :
        ctx.table(dir.path("tokens_per_expert"), Schemas.TOKENS_PER_EXPERT)
            .select("batch", "expert", "kept", "dropped")
            .collectAsList()) {
      batchIds.add(r.getLong(0));
      kept[r.getInt(1)] += r.getLong(2);
      dropped[r.getInt(1)] += r.getLong(3);
    }
    long batches = batchIds.size();
    Map<Integer, Long> rowsPerRank =
        format.equals("safetensors")
            ? ShardFiles.rowsPerRank(ctx.hadoop(), dir.path("data"))
            : rowsPerRank(ctx, dir.path("data"), spec.settings().layout());
    Map<Integer, String[]> backendOf = new TreeMap<>();
    for (String b : backends) {
      String[] f = b.split("\\|", -1);
      backendOf.put(Integer.parseInt(f[0]), f);
    }
    ArrayNode rs = m.putArray("ranks");
    long rowsOut = 0;
    long keptAll = 0;
    long droppedAll = 0;
    java.util.TreeSet<String> reasons = new java.util.TreeSet<>(); // said once, not per rank
    for (int r = 0; r < ranks; r++) {
      ObjectNode rn = rs.addObject();
      rn.put("rank", r);
      ArrayNode ex = rn.putArray("experts");
      long k = 0;
      long d = 0;
      for (int x : placement.expertsOf(r)) {
        ex.add(x);
        k += kept[x];
        d += dropped[x];
      }
      String[] b = backendOf.get(r);
      rn.put("backend", b == null ? "none" : b[1]);
      rn.put("executor", b == null ? "" : b[2]);
      if (b != null && !b[3].isEmpty()) {
        reasons.add(b[3]);
      }
      long rows = rowsPerRank.getOrDefault(r, 0L);
      rn.put("rows", rows);
      rn.put("kept_slots", k);
      rn.put("dropped_slots", d);
      rowsOut += rows;
      keptAll += k;
      droppedAll += d;
    }
    ArrayNode why = m.putArray("fallback_reasons");
    reasons.forEach(why::add);
    m.put("batches", batches);
    m.put("rows_out", rowsOut);
    m.put("kept_slots", keptAll);
    m.put("dropped_slots", droppedAll);
    ArrayNode tk = m.putArray("tokens_per_expert");
    ArrayNode dr = m.putArray("dropped_per_expert");
    for (int x = 0; x < e; x++) {
      tk.add(kept[x]);
      dr.add(dropped[x]);
    }
    return m;
  }
}
