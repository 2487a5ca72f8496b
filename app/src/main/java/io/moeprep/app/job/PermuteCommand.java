package io.moeprep.app.job;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.sum;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.BadRowPolicy;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.util.CollectionAccumulator;

/** {@code moeprep permute}: token table in, permuted Parquet per EP rank out. */
final class PermuteCommand implements Command.Runner {
  static final String MANIFEST = "manifest.json";

  static final Command COMMAND =
      new Command(
          "permute",
          "permute a token table per EP rank (dispatch): Parquet in, Parquet per rank out",
          """
          usage: moeprep permute --input TOKENS --out DIR --ep-size R [options]

          Reads a token table (token_id, hidden as binary or array<float>, expert_ids, optional
          probs and batch) and writes, partitioned by ep_rank (DIR/<part>/ep_rank=r/):
            DIR/data               the permuted tokens (layout rows or packed)
            DIR/row_map            the output row of every slot, per (rank, batch, token)
            DIR/tokens_per_expert  kept and dropped slots and the segment per (rank, batch, expert)
            DIR/bad_rows           with --bad-rows skip: the skipped rows (token_id, batch,
                                   reason)
            DIR/manifest.json      inputs, options, backend per rank, tokens per expert, dropped
                                   slots, bad rows and timings
          DIR appears only when complete. --experts, --hidden, --dtype and --top-k default to the
          values in TOKENS/_manifest.json when TOKENS was written by moeprep generate.

          options:
            --input TOKENS         input token table (Parquet; required)
            --out DIR              output directory (required)
            --ep-size R            expert-parallel ranks (required unless --placement)
            --experts E            experts
            --hidden H             elements per token
            --dtype D              f32, bf16, f16, fp8e4m3, fp8e5m2
            --top-k K              slots per token
            --placement LIST       rank of each expert, comma separated (default: contiguous)
            --num-out M            keep the first M slots per (rank, batch), pad to M rows
            --capacity C           keep each expert's first C slots per batch
            --capacity-factor F    capacity C = ceil(F * T * K / E), T = tokens per batch
            --pad-to-capacity      pad every expert segment to exactly C rows
            --align A              pad every expert segment to a multiple of A rows
            --tokens-per-batch T   tokens per batch (batch = token_id / T without a batch column)
            --layout L             rows or packed (default: spark.moeprep.layout, rows)
            --dispatch D           all_to_all or all_gather (default: spark.moeprep.dispatch)
            --backend B            auto, cpu or cuda (default: spark.moeprep.backend, auto)
            --max-block-bytes B    largest packed block (default: spark.moeprep.packed.maxBlockBytes)
            --chunk-bytes B        hidden bytes per dispatch chunk (default:
                                   spark.moeprep.dispatch.chunkBytes)
            --bad-rows P           fail (a bad input row fails the job, naming its token id) or
                                   skip (left out, listed in DIR/bad_rows, counted in the
                                   manifest) (default: spark.moeprep.badRows, fail)
            --force                replace DIR if it exists
          """,
          Set.of(
              "input",
              "out",
              "ep-size",
              "experts",
              "hidden",
              "dtype",
              "top-k",
              "placement",
              "num-out",
              "capacity",
              "capacity-factor",
              "align",
              "tokens-per-batch",
              "layout",
              "dispatch",
              "backend",
              "max-block-bytes",
              "chunk-bytes",
              "bad-rows"),
          Set.of("pad-to-capacity", "force"),
          PermuteCommand::new);

  private final Args args;
  final String input;
  final String out;
  final boolean force;

  PermuteCommand(Args a) {
    this.args = a;
    input = a.required("input", "TOKENS (a Parquet token table)");
    out = a.required("out", "DIR");
    force = a.flag("force");
    if (!a.has("ep-size") && !a.has("placement")) {
      throw new IllegalArgumentException(
          "option --ep-size is missing: give --ep-size R (or --placement r0,r1,...)");
    }
    int caps = (a.has("num-out") ? 1 : 0) + (a.has("capacity") ? 1 : 0);
    caps += a.has("capacity-factor") ? 1 : 0;
    if (caps > 1) {
      throw new IllegalArgumentException(
          "--num-out, --capacity and --capacity-factor exclude each other: give one");
    }
    if (a.flag("pad-to-capacity") && !a.has("capacity") && !a.has("capacity-factor")) {
      throw new IllegalArgumentException(
          "--pad-to-capacity needs --capacity C or --capacity-factor F");
    }
    if (a.has("align") && a.has("num-out")) {
      throw new IllegalArgumentException(
          "--align cannot be combined with --num-out: choose one of them");
    }
    a.integer("ep-size", 1, 1, 1 << 20);
    a.integer("align", 1, 1, Integer.MAX_VALUE);
    a.longValue("num-out", 0, 0, Integer.MAX_VALUE);
    a.longValue("capacity", 0, 0, Integer.MAX_VALUE);
    a.real("capacity-factor", 1, 0, 1e6);
    a.choice("layout", "rows", "rows", "packed");
    a.choice("dispatch", "all_to_all", "all_to_all", "all_gather");
    a.choice("backend", "auto", "auto", "cpu", "cuda");
  }

  /** The spec options ({@link PermuteSpec#fromOptions} keys) from the arguments and the input. */
  Map<String, String> specOptions(JsonNode gen) {
    Map<String, String> o = new LinkedHashMap<>();
    int e = intFrom("experts", "experts", gen, "E");
    o.put("numExperts", Integer.toString(e));
    if (args.has("placement")) {
      o.put("placement", args.str("placement", ""));
      if (args.has("ep-size")) {
        o.put("epSize", args.str("ep-size", ""));
      }
    } else {
      int r = args.integer("ep-size", 1, 1, 1 << 20);
      if (e % r != 0) {
        throw new IllegalArgumentException(
            "--experts "
                + e
                + " is not a multiple of --ep-size "
                + r
                + ": change one, or give --placement with one rank per expert");
      }
      o.put("epSize", Integer.toString(r));
    }
    o.put("hidden", Integer.toString(intFrom("hidden", "hidden", gen, "H")));
    String dtype = args.has("dtype") ? args.str("dtype", "") : text(gen, "dtype", "dtype", "D");
    o.put("dtype", dtype);
    int k = intFrom("top-k", "top_k", gen, "K");
    o.put("topK", Integer.toString(k));
    if (args.has("num-out")) {
      o.put("capacity", "numOut:" + args.longValue("num-out", 0, 0, Integer.MAX_VALUE));
    } else if (args.has("capacity") || args.has("capacity-factor")) {
      long c;
      if (args.has("capacity")) {
        c = args.longValue("capacity", 0, 0, Integer.MAX_VALUE);
      } else {
        int t = intFrom("tokens-per-batch", "tokens_per_batch", gen, "T");
        double f = args.real("capacity-factor", 1, 0, 1e6);
        c = (long) Math.ceil(f * t * k / e);
      }
      o.put("capacity", (args.flag("pad-to-capacity") ? "perExpertPadded:" : "perExpert:") + c);
    }
    if (args.has("align")) {
      o.put("align", Integer.toString(args.integer("align", 1, 1, Integer.MAX_VALUE)));
    }
    if (args.has("tokens-per-batch")) {
      o.put("tokensPerBatch", args.str("tokens-per-batch", ""));
    } else if (gen != null && gen.has("tokens_per_batch")) {
      o.put("tokensPerBatch", gen.get("tokens_per_batch").asText());
    }
    for (String[] kv :
        new String[][] {
          {"layout", "layout"},
          {"dispatch", "dispatch"},
          {"backend", "backend"},
          {"max-block-bytes", "maxBlockBytes"},
          {"chunk-bytes", "chunkBytes"},
          {"bad-rows", "badRows"}
        }) {
      if (args.has(kv[0])) {
        o.put(kv[1], args.str(kv[0], ""));
      }
    }
    return o;
  }

  private int intFrom(String option, String key, JsonNode gen, String meta) {
    if (args.has(option)) {
      return args.integer(option, 0, 1, Integer.MAX_VALUE);
    }
    return Integer.parseInt(text(gen, option, key, meta));
  }

  private String text(JsonNode gen, String option, String key, String meta) {
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
    ctx.requireExists(input, "--input");
    JsonNode gen = null;
    org.apache.hadoop.fs.Path gm = new org.apache.hadoop.fs.Path(input, GenerateCommand.MANIFEST);
    if (gm.getFileSystem(ctx.hadoop()).exists(gm)) {
      gen = Json.read(ctx.hadoop(), input, GenerateCommand.MANIFEST, "--input");
    }
    Map<String, String> given = specOptions(gen);
    PermuteSpec spec = PermuteSpec.fromOptions(given).resolve(k -> ctx.spark.conf().get(k, null));
    Map<String, String> options = resolvedOptions(spec, given);
    ObjectNode timings = Json.object();
    Dataset<Row> tokens = ctx.spark.read().parquet(input);
    PermuteOutput perm = MoePrep.permute(tokens, spec);
    perm.persist(StorageLevel.MEMORY_AND_DISK());
    CollectionAccumulator<String> backends =
        ctx.spark.sparkContext().collectionAccumulator("moeprep.permute.backends");
    try (OutputDir dir = OutputDir.create(ctx.hadoop(), out, "--out", force)) {
      try (Progress.Step s =
          ctx.progress.step(
              "data (" + spec.settings().layout().name().toLowerCase(Locale.ROOT) + ")")) {
        perm.data()
            .write()
            .options(MoePrep.PARQUET_OPTIONS)
            .partitionBy("ep_rank")
            .parquet(dir.path("data"));
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
      long badRows = 0;
      if (spec.settings().badRows() == BadRowPolicy.SKIP) {
        try (Progress.Step s = ctx.progress.step("bad rows")) {
          perm.badRows().write().parquet(dir.path("bad_rows"));
          badRows = ctx.spark.read().parquet(dir.path("bad_rows")).count();
          timings.put("bad_rows", s.done());
        }
      }
      ObjectNode m;
      try (Progress.Step s = ctx.progress.step("manifest")) {
        m = manifest(ctx, dir, spec, options, gen, backends.value());
        m.put("bad_rows", badRows);
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
          options.get("dispatch"),
          backendSummary(m),
          dropped,
          slots,
          slots == 0 ? 0.0 : 100.0 * dropped / slots,
          spec.settings().badRows() == BadRowPolicy.SKIP
              ? ", " + badRows + " bad rows skipped"
              : "",
          out);
    } catch (Exception ex) {
      IllegalArgumentException bad = JobMain.badInput(ex);
      if (bad != null && !(ex instanceof IllegalArgumentException)) {
        throw new IllegalArgumentException(
            JobMain.oneLine(bad)
                + " (check --hidden, --dtype, --top-k and --experts against the table in --input)",
            ex);
      }
      throw ex;
    } finally {
      perm.unpersist();
    }
    return 0;
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
      List<String> backends) {
    ExpertPlacement placement = spec.shape().expertPlacement();
    int e = spec.shape().numExperts();
    int ranks = placement.numRanks();
    ObjectNode m = Json.object();
    m.put("command", "permute");
    m.put("version", JobMain.VERSION);
    m.put("created", java.time.Instant.now().toString());
    ObjectNode in = m.putObject("input");
    in.put("path", input);
    in.put("rows", ctx.spark.read().parquet(input).count());
    if (gen != null) {
      in.set("generate", gen);
    }
    ObjectNode opts = m.putObject("options");
    options.forEach(opts::put);
    ObjectNode outs = m.putObject("outputs");
    outs.put("data", "data");
    outs.put("row_map", "row_map");
    outs.put("tokens_per_expert", "tokens_per_expert");
    outs.put("partitioned_by", "ep_rank");
    // tokens per expert, summed over batches, from the written table (small: B x E rows)
    long[] kept = new long[e];
    long[] dropped = new long[e];
    java.util.Set<Long> batchIds = new java.util.HashSet<>();
    for (Row r :
        ctx.spark
            .read()
            .parquet(dir.path("tokens_per_expert"))
            .select("batch", "expert", "kept", "dropped")
            .collectAsList()) {
      batchIds.add(r.getLong(0));
      kept[r.getInt(1)] += r.getLong(2);
      dropped[r.getInt(1)] += r.getLong(3);
    }
    long batches = batchIds.size();
    Dataset<Row> data = ctx.spark.read().parquet(dir.path("data"));
    Map<Integer, Long> rowsPerRank = new TreeMap<>();
    Dataset<Row> perRank =
        spec.settings().layout() == Layout.PACKED
            ? data.groupBy("ep_rank").agg(sum(col("rows").cast("long")))
            : data.groupBy("ep_rank").count();
    for (Row r : perRank.collectAsList()) {
      rowsPerRank.put(r.getInt(0), r.isNullAt(1) ? 0L : r.getLong(1));
    }
    Map<Integer, String[]> backendOf = new TreeMap<>();
    for (String b : backends) {
      String[] f = b.split("\\|", -1);
      backendOf.put(Integer.parseInt(f[0]), f);
    }
    ArrayNode rs = m.putArray("ranks");
    long rowsOut = 0;
    long keptAll = 0;
    long droppedAll = 0;
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
        rn.put("fallback_reason", b[3]);
      }
      long rows = rowsPerRank.getOrDefault(r, 0L);
      rn.put("rows", rows);
      rn.put("kept_slots", k);
      rn.put("dropped_slots", d);
      rowsOut += rows;
      keptAll += k;
      droppedAll += d;
    }
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
