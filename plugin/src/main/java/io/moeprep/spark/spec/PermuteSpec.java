package io.moeprep.spark.spec;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.conf.ConfigEntry;
import io.moeprep.spark.conf.MoePrepConf;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.function.Function;

/**
 * What a permute or unpermute job does: the {@link ProblemShape shape} of the problem, the {@link
 * RunSettings settings} it runs with, and the input {@link Columns columns}. Immutable and
 * serializable; build it with {@link #builder}.
 *
 * <pre>{@code
 * PermuteSpec spec = PermuteSpec.builder(64, 8).hidden(1024, DType.BF16).topK(8)
 *     .layout(Layout.PACKED).build();
 * }</pre>
 *
 * <p>Settings are entries of the typed configuration ({@link MoePrepConf}): those given in code
 * (the builder's setters, or data source options) take the place of the session's {@code
 * spark.moeprep.*} values, read when the job is planned ({@link #resolve}). Until then, {@link
 * #settings()} holds the settings given in code over the defaults.
 */
public final class PermuteSpec implements Serializable {
  private static final long serialVersionUID = 2L;

  private final ProblemShape shape;
  private final RunSettings settings;
  private final Columns columns;

  /** The settings given in code, by configuration key: raw values, as a session would hold them. */
  private final Map<String, String> given;

  private PermuteSpec(Builder b, Function<String, String> conf) {
    Function<String, String> lookup = k -> b.given.containsKey(k) ? b.given.get(k) : conf.apply(k);
    this.shape =
        new ProblemShape(
            b.numExperts,
            b.epSize,
            b.placement,
            b.hidden,
            b.dtype,
            b.topK,
            b.capacity,
            b.align,
            MoePrepConf.TOKENS_PER_BATCH.readFrom(lookup));
    this.settings = RunSettings.read(lookup);
    this.columns = b.columns;
    this.given = Map.copyOf(b.given);
  }

  /** A builder for {@code numExperts} experts over {@code epSize} ranks (contiguous placement). */
  public static Builder builder(int numExperts, int epSize) {
    return new Builder(numExperts, epSize);
  }

  /** What is computed. */
  public ProblemShape shape() {
    return shape;
  }

  /** How it runs. */
  public RunSettings settings() {
    return settings;
  }

  /** The input column names. */
  public Columns columns() {
    return columns;
  }

  /**
   * This spec with every setting not given in code read from a configuration ({@code key -> value
   * or null}, e.g. {@code k -> spark.conf().get(k, null)}), and then fixed: resolving the result
   * again, or rebuilding it with {@link #toBuilder}, keeps these values.
   */
  public PermuteSpec resolve(Function<String, String> conf) {
    Builder b = toBuilder();
    Function<String, String> lookup = k -> given.containsKey(k) ? given.get(k) : conf.apply(k);
    for (ConfigEntry<?> e : MoePrepConf.ALL) {
      b.given.put(e.key(), e.rawFrom(lookup));
    }
    return b.build();
  }

  /** A builder holding this spec's shape, columns and settings given in code. */
  public Builder toBuilder() {
    Builder b = new Builder(shape.numExperts(), shape.epSize());
    b.placement = shape.placement();
    b.hidden = shape.hidden();
    b.dtype = shape.dtype();
    b.topK = shape.topK();
    b.capacity = shape.capacity();
    b.align = shape.align();
    b.columns = columns;
    b.given.putAll(given);
    return b;
  }

  /**
   * A spec from string options (the data source and SQL path): {@code numExperts}, {@code epSize}
   * or {@code placement} (comma-separated rank of each expert), {@code hidden}, {@code dtype},
   * {@code topK}, optional {@code capacity} ({@code none}, {@code numOut:M}, {@code perExpert:C},
   * {@code perExpertPadded:C}), {@code align}, {@code tokensPerBatch}, {@code dispatch}, {@code
   * partitioning}, {@code batchPartitions}, {@code layout}, {@code backend}, {@code maxBlockBytes},
   * {@code chunkBytes}, {@code badRows} ({@code fail | skip}), {@code gpuMemoryLimit}, {@code
   * oomFallback}, and column names {@code tokenIdCol}, {@code hiddenCol}, {@code expertIdsCol},
   * {@code probsCol}, {@code batchCol}. Keys ignore case.
   */
  public static PermuteSpec fromOptions(Map<String, String> options) {
    Function<String, String> o = k -> option(options, k);
    int e = requiredInt(o, "numExperts");
    String placement = o.apply("placement");
    Builder b;
    if (placement != null) {
      String[] parts = placement.split(",");
      int[] table = new int[parts.length];
      int ranks = 0;
      for (int i = 0; i < parts.length; i++) {
        table[i] = Integer.parseInt(parts[i].trim());
        ranks = Math.max(ranks, table[i] + 1);
      }
      String r = o.apply("epSize");
      b = builder(e, r == null ? ranks : Integer.parseInt(r)).placement(table);
    } else {
      b = builder(e, requiredInt(o, "epSize"));
    }
    b.hidden(requiredInt(o, "hidden"), DType.parse(required(o, "dtype")));
    b.topK(requiredInt(o, "topK"));
    String cap = o.apply("capacity");
    if (cap != null && !cap.equalsIgnoreCase("none")) {
      String[] kv = cap.split(":");
      String invalid =
          "capacity '"
              + cap
              + "' is invalid: must be none, numOut:M, perExpert:C or perExpertPadded:C";
      if (kv.length != 2) {
        throw new IllegalArgumentException(invalid);
      }
      long v = Long.parseLong(kv[1].trim());
      switch (kv[0].trim().toLowerCase(Locale.ROOT)) {
        case "numout" -> b.numOut(v);
        case "perexpert" -> b.perExpertCapacity(v, false);
        case "perexpertpadded" -> b.perExpertCapacity(v, true);
        default -> throw new IllegalArgumentException(invalid);
      }
    }
    if (o.apply("align") != null) {
      b.align(Integer.parseInt(o.apply("align")));
    }
    if (o.apply("tokensPerBatch") != null) {
      b.tokensPerBatch(MoePrepConf.TOKENS_PER_BATCH.parse(o.apply("tokensPerBatch")));
    }
    if (o.apply("dispatch") != null) {
      b.dispatch(Dispatch.parse(o.apply("dispatch")));
    }
    if (o.apply("partitioning") != null) {
      b.partitioning(Partitioning.parse(o.apply("partitioning")));
    }
    if (o.apply("batchPartitions") != null) {
      b.batchPartitions(MoePrepConf.BATCH_PARTITIONS.parse(o.apply("batchPartitions")));
    }
    if (o.apply("layout") != null) {
      b.layout(Layout.parse(o.apply("layout")));
    }
    if (o.apply("backend") != null) {
      b.backend(BackendChoice.parse(o.apply("backend")));
    }
    if (o.apply("chunkBytes") != null) {
      b.chunkBytes(MoePrepConf.DISPATCH_CHUNK_BYTES.parse(o.apply("chunkBytes")));
    }
    if (o.apply("badRows") != null) {
      b.badRows(BadRowPolicy.parse(MoePrepConf.BAD_ROWS.parse(o.apply("badRows"))));
    }
    if (o.apply("gpuMemoryLimit") != null) {
      b.gpuMemoryLimit(MoePrepConf.GPU_MEMORY_LIMIT.parse(o.apply("gpuMemoryLimit")));
    }
    if (o.apply("oomFallback") != null) {
      b.oomFallback(MoePrepConf.GPU_OOM_FALLBACK.parse(o.apply("oomFallback")));
    }
    if (o.apply("maxBlockBytes") != null) {
      b.maxBlockBytes(MoePrepConf.PACKED_MAX_BLOCK_BYTES.parse(o.apply("maxBlockBytes")));
    }
    Columns d = Columns.DEFAULT;
    b.columns(
        Objects.requireNonNullElse(o.apply("tokenIdCol"), d.tokenId()),
        Objects.requireNonNullElse(o.apply("hiddenCol"), d.hidden()),
        Objects.requireNonNullElse(o.apply("expertIdsCol"), d.expertIds()),
        Objects.requireNonNullElse(o.apply("probsCol"), d.probs()),
        Objects.requireNonNullElse(o.apply("batchCol"), d.batch()));
    return b.build();
  }

  /** The value of option {@code key} in {@code options}, ignoring the case of keys, or null. */
  public static String option(Map<String, String> options, String key) {
    for (Map.Entry<String, String> e : options.entrySet()) {
      if (e.getKey().equalsIgnoreCase(key)) {
        return e.getValue();
      }
    }
    return null;
  }

  private static String required(Function<String, String> o, String k) {
    String v = o.apply(k);
    if (v == null) {
      throw new IllegalArgumentException("option " + k + " is missing: it is required");
    }
    return v;
  }

  private static int requiredInt(Function<String, String> o, String k) {
    String v = required(o, k);
    try {
      return Integer.parseInt(v.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("option " + k + " = '" + v + "' is not an integer", e);
    }
  }

  @Override
  public String toString() {
    return "PermuteSpec[" + shape + ", " + settings + ", " + columns + "]";
  }

  /** Builds a {@link PermuteSpec}; every setter checks its argument. */
  public static final class Builder {
    private final int numExperts;
    private final int epSize;
    private List<Integer> placement = List.of();
    private int hidden = -1;
    private DType dtype;
    private int topK = -1;
    private ProblemShape.Capacity capacity = ProblemShape.Capacity.NONE;
    private int align = 1;
    private Columns columns = Columns.DEFAULT;
    private final Map<String, String> given = new TreeMap<>();

    private Builder(int numExperts, int epSize) {
      if (numExperts < 1) {
        throw new IllegalArgumentException(
            "numExperts = " + numExperts + " is invalid: must be >= 1");
      }
      if (epSize < 1) {
        throw new IllegalArgumentException("epSize = " + epSize + " is invalid: must be >= 1");
      }
      this.numExperts = numExperts;
      this.epSize = epSize;
    }

    /** An explicit placement: {@code rankOfExpert[e]} in {@code [0, epSize)} owns expert e. */
    public Builder placement(int[] rankOfExpert) {
      ExpertPlacement.explicit(rankOfExpert, epSize);
      if (rankOfExpert.length != numExperts) {
        throw new IllegalArgumentException(
            "placement has "
                + rankOfExpert.length
                + " entries but numExperts = "
                + numExperts
                + ": they must be equal");
      }
      List<Integer> table = new ArrayList<>(rankOfExpert.length);
      for (int r : rankOfExpert) {
        table.add(r);
      }
      this.placement = List.copyOf(table);
      return this;
    }

    /** {@code H} elements of {@code dtype} per token. */
    public Builder hidden(int hidden, DType dtype) {
      if (hidden < 1) {
        throw new IllegalArgumentException("hidden = " + hidden + " is invalid: must be >= 1");
      }
      this.hidden = hidden;
      this.dtype = Objects.requireNonNull(dtype, "dtype");
      return this;
    }

    /** {@code K} slots per token. */
    public Builder topK(int k) {
      if (k < 1) {
        throw new IllegalArgumentException("topK = " + k + " is invalid: must be >= 1");
      }
      this.topK = k;
      return this;
    }

    /** Global truncation to {@code m} rows per (rank, batch) (contract, numOutTokens). */
    public Builder numOut(long m) {
      capacity = new ProblemShape.Capacity(ProblemShape.Capacity.Kind.NUM_OUT, m, false);
      return this;
    }

    /** Per-expert capacity {@code c} per batch, optionally padded to exactly {@code c} rows. */
    public Builder perExpertCapacity(long c, boolean pad) {
      capacity = new ProblemShape.Capacity(ProblemShape.Capacity.Kind.PER_EXPERT, c, pad);
      return this;
    }

    /** Pads each local expert segment with zero rows to a multiple of {@code a}. */
    public Builder align(int a) {
      if (a < 1) {
        throw new IllegalArgumentException("align = " + a + " is invalid: must be >= 1");
      }
      align = a;
      return this;
    }

    /** Tokens per batch when the input has no batch column. */
    public Builder tokensPerBatch(int n) {
      if (n < 1) {
        throw new IllegalArgumentException("tokensPerBatch = " + n + " is invalid: must be >= 1");
      }
      return set(MoePrepConf.TOKENS_PER_BATCH, Integer.toString(n));
    }

    /** Dispatch mode ({@code null}: the session's). */
    public Builder dispatch(Dispatch d) {
      return set(MoePrepConf.DISPATCH, d == null ? null : Choices.name(d));
    }

    /**
     * How the work is laid out over Spark partitions ({@code null}: the session's): {@link
     * Partitioning#RANK} (partition r = rank r) or {@link Partitioning#BATCH} (shuffle-less, for
     * output written per rank).
     */
    public Builder partitioning(Partitioning p) {
      return set(MoePrepConf.PARTITIONING, p == null ? null : Choices.name(p));
    }

    /** Partitions of the shuffle by batch ({@code 0} = {@code spark.sql.shuffle.partitions}). */
    public Builder batchPartitions(int p) {
      return check(MoePrepConf.BATCH_PARTITIONS, Integer.toString(p));
    }

    /** Output layout ({@code null}: the session's). */
    public Builder layout(Layout l) {
      return set(MoePrepConf.LAYOUT, l == null ? null : Choices.name(l));
    }

    /** Kernel backend ({@code null}: the session's). */
    public Builder backend(BackendChoice b) {
      return set(MoePrepConf.BACKEND, b == null ? null : Choices.name(b));
    }

    /** Largest PACKED hidden block in bytes, {@code [1, 2^31-1]}. */
    public Builder maxBlockBytes(long bytes) {
      return check(MoePrepConf.PACKED_MAX_BLOCK_BYTES, Long.toString(bytes));
    }

    /** Hidden bytes per dispatch chunk ({@code [1, 2^30]}). */
    public Builder chunkBytes(long bytes) {
      return check(MoePrepConf.DISPATCH_CHUNK_BYTES, Long.toString(bytes));
    }

    /** Partitions of the combine stage ({@code 0} = {@code spark.sql.shuffle.partitions}). */
    public Builder combinePartitions(int p) {
      return check(MoePrepConf.COMBINE_PARTITIONS, Integer.toString(p));
    }

    /**
     * What happens to an input row that fails validation: {@link BadRowPolicy#FAIL} (the default)
     * fails the job naming its token id; {@link BadRowPolicy#SKIP} leaves it out, counts it and
     * lists it in {@code PermuteOutput.badRows()}.
     */
    public Builder badRows(BadRowPolicy p) {
      return set(MoePrepConf.BAD_ROWS, Choices.name(Objects.requireNonNull(p, "badRows")));
    }

    /**
     * Caps the device memory MoePrep holds per GPU and executor ({@code 0}: no cap); a batch that
     * would cross it runs out of device memory (see {@link #oomFallback}).
     */
    public Builder gpuMemoryLimit(long bytes) {
      return check(MoePrepConf.GPU_MEMORY_LIMIT, Long.toString(bytes));
    }

    /**
     * Whether a batch that runs out of device memory runs again on the CPU, logged and counted in
     * the {@code oomFallbacks} metric (the default), or fails its task.
     */
    public Builder oomFallback(boolean fallback) {
      return set(MoePrepConf.GPU_OOM_FALLBACK, Boolean.toString(fallback));
    }

    /**
     * Input column names. {@code probs} and {@code batch} are used when the input has them; the
     * others are required.
     */
    public Builder columns(
        String tokenId, String hidden, String expertIds, String probs, String batch) {
      columns = new Columns(tokenId, hidden, expertIds, probs, batch);
      return this;
    }

    /** The spec; fails when hidden/dtype or topK were not set or the options conflict. */
    public PermuteSpec build() {
      if (hidden < 1 || dtype == null) {
        throw new IllegalArgumentException("hidden and dtype are not set: call hidden(H, dtype)");
      }
      if (topK < 1) {
        throw new IllegalArgumentException("topK is not set: call topK(K)");
      }
      return new PermuteSpec(this, k -> null);
    }

    /** Gives a setting in code, checked by its entry. */
    private Builder check(ConfigEntry<?> entry, String raw) {
      entry.parse(raw);
      return set(entry, raw);
    }

    /** Gives a setting in code ({@code null}: not given, the session's value applies). */
    private Builder set(ConfigEntry<?> entry, String raw) {
      if (raw == null) {
        given.remove(entry.key());
      } else {
        given.put(entry.key(), raw);
      }
      return this;
    }
  }
}
