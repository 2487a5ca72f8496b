package io.moeprep.app.job;

import static java.nio.ByteOrder.LITTLE_ENDIAN;
import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.floor;
import static org.apache.spark.sql.functions.lit;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.SegmentLayout;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.cpu.ReferenceBatch.Token;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.sink.SafetensorsFile;
import io.moeprep.spark.sink.ShardSchema;
import io.moeprep.spark.spec.Columns;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code moeprep verify}: recomputes a sample of batches with the kernels directly (CPU backend, no
 * Spark in the computation) from the input table and compares every output byte for byte.
 */
@Command(
    name = "verify",
    header = "recompute a sample of batches with the kernels directly and compare bytes",
    customSynopsis =
        "moeprep verify --permuted DIR [--input TOKENS] [--combined OUT] [--batches B] [--seed S]",
    description = {
      "For each sampled batch, reads the batch's tokens from the input table, sorts them by",
      "token_id and runs the CPU kernels directly for every rank, then compares with the",
      "permute output: the permuted rows (token, slot, prob, hidden bytes, expert), the row map",
      "and tokens per expert. With --combined (the output of moeprep unpermute with identity",
      "experts) it also compares each combined token with a single-device unpermute.",
      "Exits 0 when all equal, 1 with the first difference otherwise."
    })
final class VerifyCommand implements JobCommand {
  @Mixin PermutedOption permuted = new PermutedOption();

  @Option(
      names = "--input",
      paramLabel = "TOKENS",
      description = "the token table (default: the input recorded in DIR/manifest.json)")
  String input;

  @Option(
      names = "--combined",
      paramLabel = "OUT",
      description = "output directory of moeprep unpermute to check as well")
  String combined;

  @Option(
      names = "--batches",
      paramLabel = "B",
      description = "batches to sample (default 4; 0 = all)")
  int batches = 4;

  @Option(names = "--seed", paramLabel = "S", description = "seed of the sample (default 7)")
  long seed = 7;

  @Mixin HelpOption help;

  /** The token table (--input or the permute's input) and the unpermute's manifest or null. */
  private String inputPath;

  private ObjectNode combinedManifest;

  @Override
  public void validate() {
    OptionChecks.inRange("--batches", batches, 0, Integer.MAX_VALUE);
  }

  @Override
  public void checkPaths(Configuration hadoop) throws IOException {
    permuted.readManifest(hadoop);
    inputPath = input != null ? input : permuted.manifest.get("input").get("path").asText();
    JobContext.requireExists(
        hadoop,
        inputPath,
        input != null ? "--input" : "the input in --permuted's manifest (give --input)");
    inputPath = GenerateCommand.tablePath(hadoop, inputPath);
    if (combined != null) {
      JobContext.requireExists(hadoop, combined, "--combined");
      combinedManifest = Json.read(hadoop, combined, UnpermuteCommand.MANIFEST, "--combined");
    }
  }

  /** The first difference found, as one line. */
  static final class Mismatch extends Exception {
    private static final long serialVersionUID = 1L;

    Mismatch(String m) {
      super(m);
    }
  }

  @Override
  public int run(JobContext ctx) throws Exception {
    String in = inputPath;
    PermuteSpec spec = UnpermuteCommand.specOf(ctx, permuted.manifest, BackendChoice.CPU);
    ObjectNode cm = combinedManifest;
    boolean checkCombined = cm != null && cm.get("input").get("identity_experts").asBoolean();
    long start = System.nanoTime();
    try (Progress.Step step = ctx.progress.step("recompute and compare")) {
      Verified v = verify(ctx, spec, in, checkCombined);
      step.done();
      ctx.out.println("verify: OK: " + v.text());
      if (cm != null && !checkCombined) {
        ctx.out.println(
            "verify: note: --combined was not checked: its expert outputs are not the identity");
      }
      if (ctx.summary) {
        ctx.out.printf(
            Locale.ROOT,
            "verify: %d rank batches, %d rows, %s of hidden rows, %d combined tokens compared in"
                + " %.1f s%n",
            (long) v.sampled() * v.ranks(),
            v.rows(),
            BatchCounters.bytes(v.rows() * spec.shape().rowBytes()),
            v.combinedTokens(),
            (System.nanoTime() - start) / 1e9);
      }
      return 0;
    } catch (Mismatch m) {
      ctx.out.println("verify: MISMATCH: " + m.getMessage());
      ctx.err.println(
          "moeprep verify: failed: the output differs from the kernels: " + m.getMessage());
      return 1;
    }
  }

  /**
   * What a verify compared: {@code sampled} of {@code batches} batches, each for {@code ranks}
   * ranks; {@code rows} permuted rows (padding included) and {@code combinedTokens} combined tokens
   * ({@code combined}: whether the combined tokens were checked).
   */
  record Verified(
      int sampled, int batches, int ranks, long rows, long combinedTokens, boolean combined) {
    /** The line after {@code verify: OK: }. */
    String text() {
      return String.format(
          Locale.ROOT,
          "%d of %d batches x %d ranks recomputed with the CPU kernels: %d permuted rows, their row"
              + " maps and tokens per expert%s equal byte for byte",
          sampled,
          batches,
          ranks,
          rows,
          combined ? ", and " + combinedTokens + " combined tokens," : "");
    }
  }

  private Verified verify(JobContext ctx, PermuteSpec spec, String in, boolean checkCombined)
      throws Mismatch, IOException {
    Columns cols = spec.columns();
    String[] c = {cols.tokenId(), cols.hidden(), cols.expertIds(), cols.probs(), cols.batch()};
    Dataset<Row> tokens = ctx.spark.read().parquet(in);
    List<String> fields = Arrays.asList(tokens.schema().fieldNames());
    if (!fields.contains(c[1]) || tokens.schema().apply(c[1]).dataType() != DataTypes.BinaryType) {
      throw new IllegalArgumentException(
          "column " + c[1] + " of --input is not binary: verify compares raw dtype bytes");
    }
    boolean hasProbs = fields.contains(c[3]);
    Column batch =
        fields.contains(c[4])
            ? col(c[4]).cast("long")
            : floor(col(c[0]).cast("long").divide(lit(spec.shape().tokensPerBatch()))).cast("long");
    Dataset<Row> tpe = ctx.table(permuted.path("tokens_per_expert"), Schemas.TOKENS_PER_EXPERT);
    List<Long> all = new ArrayList<>();
    for (Row r : tpe.select("batch").distinct().collectAsList()) {
      all.add(r.getLong(0));
    }
    Collections.sort(all);
    List<Long> inputBatches = new ArrayList<>();
    for (Row r : tokens.select(batch).distinct().collectAsList()) {
      inputBatches.add(r.getLong(0));
    }
    Collections.sort(inputBatches);
    if (!inputBatches.equals(all)) {
      List<Long> missing = new ArrayList<>(inputBatches);
      missing.removeAll(all);
      List<Long> extra = new ArrayList<>(all);
      extra.removeAll(inputBatches);
      throw new Mismatch(
          "the input has "
              + inputBatches.size()
              + " batches and the permute output "
              + all.size()
              + (missing.isEmpty() ? "" : "; missing from the output: batch " + missing.get(0))
              + (extra.isEmpty() ? "" : "; not in the input: batch " + extra.get(0)));
    }
    List<Long> sample = new ArrayList<>(all);
    if (batches > 0 && batches < all.size()) {
      Collections.shuffle(sample, new java.util.Random(new SplittableRandom(seed).nextLong()));
      sample = new ArrayList<>(sample.subList(0, batches));
      Collections.sort(sample);
    }
    Object[] keys = sample.toArray();
    // the sampled batches of the input, sorted by token id
    Map<Long, List<Token>> byBatch = new TreeMap<>();
    Dataset<Row> sel =
        tokens
            .select(
                col(c[0]).cast("long"),
                batch.as("__batch"),
                col(c[1]),
                col(c[2]).cast("array<int>"),
                hasProbs ? col(c[3]).cast("array<float>") : lit(null).cast("array<float>"))
            .where(col("__batch").isin(keys));
    for (Row r : sel.collectAsList()) {
      int[] ids = r.getList(3).stream().mapToInt(x -> ((Number) x).intValue()).toArray();
      float[] p = null;
      if (!r.isNullAt(4)) {
        List<Object> l = r.getList(4);
        p = new float[l.size()];
        for (int j = 0; j < p.length; j++) {
          p[j] = ((Number) l.get(j)).floatValue();
        }
      }
      byBatch
          .computeIfAbsent(r.getLong(1), b -> new ArrayList<>())
          .add(new Token(r.getLong(0), (byte[]) r.get(2), ids, p));
    }
    byBatch.values().forEach(l -> l.sort((a, b) -> Long.compare(a.id(), b.id())));
    String dataOrder = spec.settings().layout() == Layout.PACKED ? "row_offset" : "row";
    boolean shards =
        permuted.manifest.path("outputs").path("format").asText("parquet").equals("safetensors");
    Map<String, List<Row>> data =
        shards
            ? Map.of()
            : group(
                ctx,
                permuted.path("data"),
                JobContext.dataSchema(spec.settings().layout()),
                keys,
                dataOrder);
    Map<String, List<Row>> rowMap =
        group(ctx, permuted.path("row_map"), Schemas.ROW_MAP, keys, "token_id");
    Map<String, List<Row>> perExpert =
        group(
            ctx,
            permuted.path("tokens_per_expert"),
            Schemas.TOKENS_PER_EXPERT,
            keys,
            "local_expert");
    Map<Long, Map<Long, byte[]>> comb = new HashMap<>();
    if (checkCombined) {
      for (Row r :
          ctx.table(
                  OutputDir.datasetPath(combined, combinedManifest, "combined"),
                  JobContext.COMBINED)
              .where(col("batch").isin(keys))
              .collectAsList()) {
        comb.computeIfAbsent(r.getLong(r.fieldIndex("batch")), b -> new HashMap<>())
            .put(r.getLong(r.fieldIndex("token_id")), (byte[]) r.get(r.fieldIndex("hidden")));
      }
    }
    int ranks = spec.shape().expertPlacement().numRanks();
    long rows = 0;
    long combinedTokens = 0;
    for (long b : sample) {
      List<Token> toks = byBatch.getOrDefault(b, List.of());
      List<PermuteResult> results = new ArrayList<>();
      try (ReferenceBatch hb = reference(toks, spec, hasProbs)) {
        for (int r = 0; r < ranks; r++) {
          PermuteResult res = hb.permute(spec.shape().optionsForRank(r));
          results.add(res);
          String key = r + "/" + b;
          String at = "rank " + r + ", batch " + b;
          rows +=
              shards
                  ? compareShard(at, ctx, spec, r, b, toks, res)
                  : compareData(at, spec, toks, res, data.getOrDefault(key, List.of()));
          compareRowMap(at, spec, toks, res, rowMap.getOrDefault(key, List.of()));
          compareTokensPerExpert(at, spec, r, res, perExpert.getOrDefault(key, List.of()));
        }
        if (checkCombined) {
          combinedTokens += compareCombined(b, spec, toks, hb, results, comb.get(b));
        }
      } finally {
        results.forEach(PermuteResult::close);
      }
    }
    return new Verified(sample.size(), all.size(), ranks, rows, combinedTokens, checkCombined);
  }

  /** Rows of a permute output for the sampled batches, by "rank/batch", in output order. */
  private static Map<String, List<Row>> group(
      JobContext ctx, String path, StructType schema, Object[] keys, String order)
      throws IOException {
    Dataset<Row> d = ctx.table(path, schema).where(col("batch").isin(keys));
    Map<String, List<Row>> m = new HashMap<>();
    for (Row r : d.orderBy("ep_rank", "batch", order).collectAsList()) {
      m.computeIfAbsent(
              r.getInt(r.fieldIndex("ep_rank")) + "/" + r.getLong(r.fieldIndex("batch")),
              k -> new ArrayList<>())
          .add(r);
    }
    return m;
  }

  /** The batch in host buffers, its sizes checked against the permute's spec. */
  private static ReferenceBatch reference(List<Token> toks, PermuteSpec spec, boolean hasProbs) {
    try {
      return ReferenceBatch.of(
          toks, spec.shape().hidden(), spec.shape().dtype(), spec.shape().topK(), hasProbs);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          "--input does not match the spec in --permuted's manifest: " + e.getMessage(), e);
    }
  }

  private static long compareData(
      String at, PermuteSpec spec, List<Token> toks, PermuteResult exp, List<Row> actual)
      throws Mismatch {
    long rb = spec.shape().rowBytes();
    List<long[]> meta = new ArrayList<>(); // token, slot, expert (rows: per row)
    List<Float> probs = new ArrayList<>();
    java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
    if (spec.settings().layout() == Layout.PACKED) {
      long next = 0;
      for (Row r : actual) {
        long off = r.getLong(r.fieldIndex("row_offset"));
        if (off != next) {
          throw new Mismatch(at + ": packed block at row_offset " + off + ", expected " + next);
        }
        int n = r.getInt(r.fieldIndex("rows"));
        List<Object> t = r.getList(r.fieldIndex("token_ids"));
        List<Object> s = r.getList(r.fieldIndex("slots"));
        int pi = r.fieldIndex("probs");
        for (int i = 0; i < n; i++) {
          meta.add(
              new long[] {
                ((Number) t.get(i)).longValue(),
                ((Number) s.get(i)).longValue(),
                r.getInt(r.fieldIndex("expert"))
              });
          probs.add(r.isNullAt(pi) ? null : ((Number) r.getList(pi).get(i)).floatValue());
        }
        bytes.writeBytes((byte[]) r.get(r.fieldIndex("hidden")));
        next = off + n;
      }
    } else {
      for (Row r : actual) {
        meta.add(
            new long[] {
              r.getLong(r.fieldIndex("token_id")),
              r.getInt(r.fieldIndex("slot")),
              r.getInt(r.fieldIndex("expert"))
            });
        int pi = r.fieldIndex("prob");
        probs.add(r.isNullAt(pi) ? null : r.getFloat(pi));
        bytes.writeBytes((byte[]) r.get(r.fieldIndex("hidden")));
      }
    }
    long[] tokens = new long[meta.size()];
    long[] slots = new long[meta.size()];
    int[] experts = new int[meta.size()];
    for (int i = 0; i < tokens.length; i++) {
      tokens[i] = meta.get(i)[0];
      slots[i] = meta.get(i)[1];
      experts[i] = (int) meta.get(i)[2];
    }
    return compareRows(
        at,
        spec,
        toks,
        exp,
        tokens,
        slots,
        experts,
        probs.toArray(new Float[0]),
        bytes.toByteArray());
  }

  /**
   * Compares a (rank, batch)'s output rows, read back, with the kernels' result {@code exp}: their
   * number, then per row the token id and slot (-1 on padding), the expert ({@code experts}, when
   * the output has one per row), the prob (null without probs) and the hidden bytes.
   */
  private static long compareRows(
      String at,
      PermuteSpec spec,
      List<Token> toks,
      PermuteResult exp,
      long[] tokens,
      long[] slots,
      int[] experts,
      Float[] probs,
      byte[] hidden)
      throws Mismatch {
    long rb = spec.shape().rowBytes();
    if (tokens.length != exp.numOut()) {
      throw new Mismatch(at + ": " + tokens.length + " permuted rows, expected " + exp.numOut());
    }
    if (hidden.length != exp.numOut() * rb) {
      throw new Mismatch(
          at + ": " + hidden.length + " bytes of hidden data, expected " + exp.numOut() * rb);
    }
    SegmentLayout l = exp.layout();
    for (int i = 0; i < tokens.length; i++) {
      long src = exp.sourceToken().getLong(8L * i);
      long token = src < 0 ? -1 : toks.get((int) src).id();
      long slot = exp.sourceSlot().getLong(8L * i);
      String row = at + ", row " + i;
      if (tokens[i] != token || slots[i] != slot) {
        throw new Mismatch(
            row
                + ": token_id "
                + tokens[i]
                + " slot "
                + slots[i]
                + ", expected token_id "
                + token
                + " slot "
                + slot);
      }
      int expert = l.expertOfRow(i);
      if (experts != null && experts[i] != expert) {
        throw new Mismatch(row + ": expert " + experts[i] + ", expected " + expert);
      }
      Float p = probs[i];
      if (exp.permutedProbs() == null
          ? p != null
          : p == null
              || Float.floatToRawIntBits(p)
                  != Float.floatToRawIntBits(exp.permutedProbs().getFloat(4L * i))) {
        throw new Mismatch(
            row
                + ": prob "
                + p
                + ", expected "
                + (exp.permutedProbs() == null ? "null" : exp.permutedProbs().getFloat(4L * i)));
      }
      compareHidden(
          row + " (token_id " + token + ", slot " + slot + ")",
          hidden,
          (int) (i * rb),
          ReferenceBatch.row(exp.permuted(), i, rb));
    }
    return tokens.length;
  }

  /**
   * Compares the safetensors file of (rank, batch) with the kernels' result: every row's token,
   * slot, prob and bytes, the row map of the tokens in the file, and the tokens per expert.
   */
  private long compareShard(
      String at,
      JobContext ctx,
      PermuteSpec spec,
      int rank,
      long batch,
      List<Token> toks,
      PermuteResult exp)
      throws Mismatch {
    SafetensorsFile f;
    long[] tokenId;
    long[] src;
    long[] slot;
    byte[] hidden;
    byte[] probs;
    int[] rowIds;
    long[] perExpert;
    long[] offsets;
    try {
      f = ShardFiles.open(ctx.hadoop(), permuted.path("data"), rank, batch);
      tokenId = longs(f.bytes(ShardSchema.TOKEN_ID));
      src = longs(f.bytes(ShardSchema.SOURCE_TOKEN));
      slot = longs(f.bytes(ShardSchema.SOURCE_SLOT));
      hidden = f.bytes(ShardSchema.PERMUTED);
      probs =
          f.tensors().containsKey(ShardSchema.PERMUTED_PROBS)
              ? f.bytes(ShardSchema.PERMUTED_PROBS)
              : null;
      ByteBuffer map = ByteBuffer.wrap(f.bytes(ShardSchema.ROW_ID_MAP)).order(LITTLE_ENDIAN);
      rowIds = new int[map.remaining() / 4];
      map.asIntBuffer().get(rowIds);
      perExpert = longs(f.bytes(ShardSchema.TOKENS_PER_EXPERT));
      offsets = longs(f.bytes(ShardSchema.EXPERT_OFFSETS));
    } catch (IOException e) {
      throw new Mismatch(at + ": " + e.getMessage());
    }
    long[] tokens = new long[src.length];
    Float[] rowProbs = new Float[src.length];
    for (int i = 0; i < src.length; i++) {
      tokens[i] = src[i] < 0 || src[i] >= tokenId.length ? -1 : tokenId[(int) src[i]];
      rowProbs[i] =
          probs == null ? null : ByteBuffer.wrap(probs, 4 * i, 4).order(LITTLE_ENDIAN).getFloat();
    }
    long rows = compareRows(at, spec, toks, exp, tokens, slot, null, rowProbs, hidden);
    Map<Long, Integer> position = new HashMap<>();
    for (int t = 0; t < toks.size(); t++) {
      position.put(toks.get(t).id(), t);
    }
    int k = spec.shape().topK();
    for (int j = 0; j < tokenId.length; j++) {
      Integer t = position.get(tokenId[j]);
      if (t == null) {
        throw new Mismatch(at + ": token_id " + tokenId[j] + " is not in the batch");
      }
      for (int x = 0; x < k; x++) {
        int want = exp.rowIdMap().getInt(4L * ((long) t * k + x));
        if (rowIds[j * k + x] != want) {
          throw new Mismatch(
              at
                  + ": row_id_map of token_id "
                  + tokenId[j]
                  + " slot "
                  + x
                  + " is "
                  + rowIds[j * k + x]
                  + ", expected "
                  + want);
        }
      }
    }
    if (!Arrays.equals(perExpert, exp.tokensPerExpert())) {
      throw new Mismatch(at + ": tokens_per_expert " + Arrays.toString(perExpert));
    }
    if (!Arrays.equals(offsets, exp.layout().offsets())) {
      throw new Mismatch(at + ": expert_offsets " + Arrays.toString(offsets));
    }
    return rows;
  }

  private static long[] longs(byte[] b) {
    long[] v = new long[b.length / 8];
    ByteBuffer.wrap(b).order(LITTLE_ENDIAN).asLongBuffer().get(v);
    return v;
  }

  /** Fails at the first of {@code want}'s bytes that {@code got} (from {@code at}) differs in. */
  private static void compareHidden(String where, byte[] got, int at, byte[] want) throws Mismatch {
    int x = Arrays.mismatch(got, at, at + want.length, want, 0, want.length);
    if (x >= 0) {
      throw new Mismatch(
          String.format(
              Locale.ROOT,
              "%s: hidden byte %d is 0x%02x, expected 0x%02x",
              where,
              x,
              got[at + x] & 0xFF,
              want[x] & 0xFF));
    }
  }

  private static void compareRowMap(
      String at, PermuteSpec spec, List<Token> toks, PermuteResult exp, List<Row> actual)
      throws Mismatch {
    int k = spec.shape().topK();
    Map<Long, List<Object>> got = new HashMap<>();
    for (Row r : actual) {
      got.put(r.getLong(r.fieldIndex("token_id")), r.getList(r.fieldIndex("row_ids")));
    }
    for (int t = 0; t < toks.size(); t++) {
      long id = toks.get(t).id();
      List<Object> g = got.remove(id);
      for (int j = 0; j < k; j++) {
        int e = exp.rowIdMap().getInt(4L * ((long) t * k + j));
        int a = g == null ? -1 : ((Number) g.get(j)).intValue();
        if (a != e) {
          throw new Mismatch(
              at
                  + ", row map of token_id "
                  + id
                  + " slot "
                  + j
                  + ": "
                  + (g == null ? "absent" : a)
                  + ", expected "
                  + e);
        }
      }
    }
    if (!got.isEmpty()) {
      throw new Mismatch(
          at
              + ": the row map has token_id "
              + got.keySet().iterator().next()
              + ", not in the input batch");
    }
  }

  private static void compareTokensPerExpert(
      String at, PermuteSpec spec, int rank, PermuteResult exp, List<Row> actual) throws Mismatch {
    ExpertPlacement p = spec.shape().expertPlacement();
    SegmentLayout l = exp.layout();
    long[] dropped = l.droppedPerExpert();
    int[] local = p.expertsOf(rank);
    if (actual.size() != local.length) {
      throw new Mismatch(
          at + ": " + actual.size() + " tokens-per-expert rows, expected " + local.length);
    }
    for (int i = 0; i < local.length; i++) {
      Row r = actual.get(i);
      int e = local[i];
      long[] got = {
        r.getInt(r.fieldIndex("expert")),
        r.getLong(r.fieldIndex("kept")),
        r.getLong(r.fieldIndex("dropped")),
        r.getLong(r.fieldIndex("row_offset")),
        r.getLong(r.fieldIndex("rows"))
      };
      long[] want = {e, l.kept(e), dropped[e], l.offset(e), l.offset(e + 1) - l.offset(e)};
      if (!Arrays.equals(got, want)) {
        throw new Mismatch(
            at
                + ", expert "
                + e
                + ": (expert, kept, dropped, row_offset, rows) = "
                + Arrays.toString(got)
                + ", expected "
                + Arrays.toString(want));
      }
    }
  }

  /**
   * Compares the combined tokens of a batch with a single-device unpermute of identity expert
   * outputs: the ranks' permuted rows stacked, each slot mapped to its row there.
   */
  private static long compareCombined(
      long b,
      PermuteSpec spec,
      List<Token> toks,
      ReferenceBatch hb,
      List<PermuteResult> results,
      Map<Long, byte[]> actual)
      throws Mismatch {
    int n = toks.size();
    long rb = spec.shape().rowBytes();
    Map<Long, byte[]> got = actual == null ? Map.of() : actual;
    try (HostBuffer exp = hb.combineIdentity(results)) {
      if (got.size() != n) {
        throw new Mismatch("batch " + b + ": " + got.size() + " combined tokens, expected " + n);
      }
      for (int t = 0; t < n; t++) {
        long id = toks.get(t).id();
        byte[] g = got.get(id);
        if (g == null) {
          throw new Mismatch("batch " + b + ": combined token_id " + id + " is missing");
        }
        String where = "batch " + b + ", combined token_id " + id;
        if (g.length != rb) {
          throw new Mismatch(where + ": " + g.length + " hidden bytes, expected " + rb);
        }
        compareHidden(where, g, 0, ReferenceBatch.row(exp, t, rb));
      }
    }
    return n;
  }
}
