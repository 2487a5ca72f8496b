package io.moeprep.spark.api;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.spark.conf.MoePrepConf;
import java.io.Serializable;
import java.util.Map;
import java.util.function.Function;

/**
 * What a permute or unpermute job does: the shapes ({@code E} experts, {@code R} ranks or an
 * explicit expert-to-rank placement, {@code H} elements per token of a dtype, {@code K} slots per
 * token), capacity and alignment (as the contract), batching, dispatch, layout, backend, and the
 * input column names. Immutable and serializable; build it with {@link #builder}.
 *
 * <pre>{@code
 * PermuteSpec spec = PermuteSpec.builder(64, 8).hidden(1024, DType.BF16).topK(8)
 *     .layout(Layout.PACKED).build();
 * }</pre>
 *
 * <p>Settings left unset in code (tokens per batch, dispatch, layout, backend, packed block size)
 * come from the session's {@code spark.moeprep.*} configuration when the job is planned.
 */
public final class PermuteSpec implements Serializable {
  private static final long serialVersionUID = 1L;

  /** Which capacity policy of the contract applies. */
  public enum Capacity {
    /** Keep every valid slot. */
    NONE,
    /** Keep the first {@code numOut} slots of the (expert, token, slot) order; pad to it. */
    NUM_OUT,
    /** Keep each expert's first {@code capacity} slots; optionally pad each segment to it. */
    PER_EXPERT
  }

  final int numExperts;
  final int epSize;
  final int[] placement;
  final int hidden;
  final DType dtype;
  final int topK;
  final Capacity capacity;
  final long capacityValue;
  final boolean padToCapacity;
  final int align;
  final Integer tokensPerBatch;
  final Dispatch dispatch;
  final Layout layout;
  final BackendChoice backend;
  final Long maxBlockBytes;
  final Long chunkBytes;
  final Integer combinePartitions;
  final BadRowPolicy badRows;
  final Long gpuMemoryLimit;
  final Boolean oomFallback;
  final String tokenIdCol;
  final String hiddenCol;
  final String expertIdsCol;
  final String probsCol;
  final String batchCol;

  private PermuteSpec(Builder b) {
    numExperts = b.numExperts;
    epSize = b.epSize;
    placement = b.placement == null ? null : b.placement.clone();
    hidden = b.hidden;
    dtype = b.dtype;
    topK = b.topK;
    capacity = b.capacity;
    capacityValue = b.capacityValue;
    padToCapacity = b.padToCapacity;
    align = b.align;
    tokensPerBatch = b.tokensPerBatch;
    dispatch = b.dispatch;
    layout = b.layout;
    backend = b.backend;
    maxBlockBytes = b.maxBlockBytes;
    chunkBytes = b.chunkBytes;
    combinePartitions = b.combinePartitions;
    badRows = b.badRows;
    gpuMemoryLimit = b.gpuMemoryLimit;
    oomFallback = b.oomFallback;
    tokenIdCol = b.tokenIdCol;
    hiddenCol = b.hiddenCol;
    expertIdsCol = b.expertIdsCol;
    probsCol = b.probsCol;
    batchCol = b.batchCol;
    // builds the kernels' own objects once, so that every invalid combination fails here
    expertPlacement();
    capacityPolicy();
    new PermuteOptions(numExperts, expertPlacement(), 0, capacityPolicy(), align);
  }

  /** A builder for {@code numExperts} experts over {@code epSize} ranks (contiguous placement). */
  public static Builder builder(int numExperts, int epSize) {
    return new Builder(numExperts, epSize);
  }

  /**
   * A spec from string options (the data source and SQL path): {@code numExperts}, {@code epSize}
   * or {@code placement} (comma-separated rank of each expert), {@code hidden}, {@code dtype},
   * {@code topK}, optional {@code capacity} ({@code none}, {@code numOut:M}, {@code perExpert:C},
   * {@code perExpertPadded:C}), {@code align}, {@code tokensPerBatch}, {@code dispatch}, {@code
   * layout}, {@code backend}, {@code maxBlockBytes}, {@code badRows} ({@code fail | skip}), {@code
   * gpuMemoryLimit}, {@code oomFallback}, and column names {@code tokenIdCol}, {@code hiddenCol},
   * {@code expertIdsCol}, {@code probsCol}, {@code batchCol}. Keys ignore case.
   */
  public static PermuteSpec fromOptions(Map<String, String> options) {
    Function<String, String> o =
        k -> {
          for (Map.Entry<String, String> e : options.entrySet()) {
            if (e.getKey().equalsIgnoreCase(k)) {
              return e.getValue();
            }
          }
          return null;
        };
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
      if (kv.length != 2) {
        throw new IllegalArgumentException(
            "capacity '"
                + cap
                + "' is invalid: must be none, numOut:M, perExpert:C or perExpertPadded:C");
      }
      long v = Long.parseLong(kv[1].trim());
      switch (kv[0].trim().toLowerCase(java.util.Locale.ROOT)) {
        case "numout" -> b.numOut(v);
        case "perexpert" -> b.perExpertCapacity(v, false);
        case "perexpertpadded" -> b.perExpertCapacity(v, true);
        default ->
            throw new IllegalArgumentException(
                "capacity '"
                    + cap
                    + "' is invalid: must be none, numOut:M, perExpert:C or perExpertPadded:C");
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
    String[] cols = {"tokenIdCol", "hiddenCol", "expertIdsCol", "probsCol", "batchCol"};
    String[] vals = new String[cols.length];
    for (int i = 0; i < cols.length; i++) {
      vals[i] = o.apply(cols[i]);
    }
    b.columns(
        vals[0] == null ? "token_id" : vals[0],
        vals[1] == null ? "hidden" : vals[1],
        vals[2] == null ? "expert_ids" : vals[2],
        vals[3] == null ? "probs" : vals[3],
        vals[4] == null ? "batch" : vals[4]);
    return b.build();
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

  /**
   * This spec with every setting left unset filled from a configuration lookup ({@code key -> value
   * or null}), e.g. {@code k -> spark.conf().get(k, null)}.
   */
  public PermuteSpec resolve(Function<String, String> conf) {
    Builder b = toBuilder();
    if (b.tokensPerBatch == null) {
      b.tokensPerBatch = MoePrepConf.TOKENS_PER_BATCH.readFrom(conf);
    }
    if (b.dispatch == null) {
      b.dispatch = Dispatch.parse(MoePrepConf.DISPATCH.readFrom(conf));
    }
    if (b.layout == null) {
      b.layout = Layout.parse(MoePrepConf.LAYOUT.readFrom(conf));
    }
    if (b.backend == null) {
      b.backend = BackendChoice.parse(MoePrepConf.BACKEND.readFrom(conf));
    }
    if (b.backend == BackendChoice.AUTO && MoePrepConf.GPU_REQUIRED.readFrom(conf)) {
      b.backend = BackendChoice.CUDA; // the GPU is required: no silent fallback
    }
    if (b.maxBlockBytes == null) {
      b.maxBlockBytes = MoePrepConf.PACKED_MAX_BLOCK_BYTES.readFrom(conf);
    }
    if (b.chunkBytes == null) {
      b.chunkBytes = MoePrepConf.DISPATCH_CHUNK_BYTES.readFrom(conf);
    }
    if (b.combinePartitions == null) {
      b.combinePartitions = MoePrepConf.COMBINE_PARTITIONS.readFrom(conf);
    }
    if (b.badRows == null) {
      b.badRows = BadRowPolicy.parse(MoePrepConf.BAD_ROWS.readFrom(conf));
    }
    if (b.gpuMemoryLimit == null) {
      b.gpuMemoryLimit = MoePrepConf.GPU_MEMORY_LIMIT.readFrom(conf);
    }
    if (b.oomFallback == null) {
      b.oomFallback = MoePrepConf.GPU_OOM_FALLBACK.readFrom(conf);
    }
    return b.build();
  }

  /** A builder holding this spec's settings. */
  public Builder toBuilder() {
    Builder b = new Builder(numExperts, epSize);
    b.placement = placement == null ? null : placement.clone();
    b.hidden = hidden;
    b.dtype = dtype;
    b.topK = topK;
    b.capacity = capacity;
    b.capacityValue = capacityValue;
    b.padToCapacity = padToCapacity;
    b.align = align;
    b.tokensPerBatch = tokensPerBatch;
    b.dispatch = dispatch;
    b.layout = layout;
    b.backend = backend;
    b.maxBlockBytes = maxBlockBytes;
    b.chunkBytes = chunkBytes;
    b.combinePartitions = combinePartitions;
    b.badRows = badRows;
    b.gpuMemoryLimit = gpuMemoryLimit;
    b.oomFallback = oomFallback;
    b.tokenIdCol = tokenIdCol;
    b.hiddenCol = hiddenCol;
    b.expertIdsCol = expertIdsCol;
    b.probsCol = probsCol;
    b.batchCol = batchCol;
    return b;
  }

  /** {@code E}. */
  public int numExperts() {
    return numExperts;
  }

  /** {@code R}. */
  public int epSize() {
    return epSize;
  }

  /** {@code H}, elements per token. */
  public int hidden() {
    return hidden;
  }

  /** Element type of the hidden rows. */
  public DType dtype() {
    return dtype;
  }

  /** {@code K}, slots per token. */
  public int topK() {
    return topK;
  }

  /** Bytes of one hidden row, {@code H * sizeof(dtype)}. */
  public long rowBytes() {
    return (long) hidden * dtype.bytes();
  }

  /** The dispatch mode, or {@code null} before {@link #resolve}. */
  public Dispatch dispatch() {
    return dispatch;
  }

  /** The output layout, or {@code null} before {@link #resolve}. */
  public Layout layout() {
    return layout;
  }

  /** The backend choice, or {@code null} before {@link #resolve}. */
  public BackendChoice backend() {
    return backend;
  }

  /** Tokens per batch without a batch column, or {@code null} before {@link #resolve}. */
  public Integer tokensPerBatch() {
    return tokensPerBatch;
  }

  /** Largest PACKED hidden block in bytes, or {@code null} before {@link #resolve}. */
  public Long maxBlockBytes() {
    return maxBlockBytes;
  }

  /** Hidden bytes per dispatch chunk, or {@code null} before {@link #resolve}. */
  public Long chunkBytes() {
    return chunkBytes;
  }

  /** Partitions of the combine stage (0 = spark.sql.shuffle.partitions), or {@code null}. */
  public Integer combinePartitions() {
    return combinePartitions;
  }

  /** What happens to a bad input row, or {@code null} before {@link #resolve}. */
  public BadRowPolicy badRows() {
    return badRows;
  }

  /** Device memory cap of MoePrep in bytes (0 = none), or {@code null} before {@link #resolve}. */
  public Long gpuMemoryLimit() {
    return gpuMemoryLimit;
  }

  /**
   * Whether a batch that runs out of device memory runs again on the CPU (else the task fails), or
   * {@code null} before {@link #resolve}.
   */
  public Boolean oomFallback() {
    return oomFallback;
  }

  /** Input column names: token id, hidden, expert ids, probs, batch. */
  public String[] columns() {
    return new String[] {tokenIdCol, hiddenCol, expertIdsCol, probsCol, batchCol};
  }

  /** The expert-to-rank placement (contiguous unless an explicit table was given). */
  public ExpertPlacement expertPlacement() {
    return placement == null
        ? ExpertPlacement.contiguous(numExperts, epSize)
        : ExpertPlacement.explicit(placement, epSize);
  }

  /** The kernels' capacity policy. */
  public CapacityPolicy capacityPolicy() {
    return switch (capacity) {
      case NONE -> CapacityPolicy.NONE;
      case NUM_OUT -> CapacityPolicy.numOut(capacityValue);
      case PER_EXPERT -> CapacityPolicy.perExpert(capacityValue, padToCapacity);
    };
  }

  /** The kernels' options for rank {@code rank}. */
  public PermuteOptions optionsForRank(int rank) {
    return new PermuteOptions(numExperts, expertPlacement(), rank, capacityPolicy(), align);
  }

  /** Builds a {@link PermuteSpec}; every setter checks its argument. */
  public static final class Builder {
    private final int numExperts;
    private final int epSize;
    private int[] placement;
    private int hidden = -1;
    private DType dtype;
    private int topK = -1;
    private Capacity capacity = Capacity.NONE;
    private long capacityValue;
    private boolean padToCapacity;
    private int align = 1;
    private Integer tokensPerBatch;
    private Dispatch dispatch;
    private Layout layout;
    private BackendChoice backend;
    private Long maxBlockBytes;
    private Long chunkBytes;
    private Integer combinePartitions;
    private BadRowPolicy badRows;
    private Long gpuMemoryLimit;
    private Boolean oomFallback;
    private String tokenIdCol = "token_id";
    private String hiddenCol = "hidden";
    private String expertIdsCol = "expert_ids";
    private String probsCol = "probs";
    private String batchCol = "batch";

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
      this.placement = rankOfExpert.clone();
      return this;
    }

    /** {@code H} elements of {@code dtype} per token. */
    public Builder hidden(int hidden, DType dtype) {
      if (hidden < 1) {
        throw new IllegalArgumentException("hidden = " + hidden + " is invalid: must be >= 1");
      }
      this.hidden = hidden;
      this.dtype = java.util.Objects.requireNonNull(dtype, "dtype");
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
      CapacityPolicy.numOut(m);
      capacity = Capacity.NUM_OUT;
      capacityValue = m;
      return this;
    }

    /** Per-expert capacity {@code c} per batch, optionally padded to exactly {@code c} rows. */
    public Builder perExpertCapacity(long c, boolean pad) {
      CapacityPolicy.perExpert(c, pad);
      capacity = Capacity.PER_EXPERT;
      capacityValue = c;
      padToCapacity = pad;
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
      tokensPerBatch = n;
      return this;
    }

    /** Dispatch mode. */
    public Builder dispatch(Dispatch d) {
      dispatch = d;
      return this;
    }

    /** Output layout. */
    public Builder layout(Layout l) {
      layout = l;
      return this;
    }

    /** Kernel backend. */
    public Builder backend(BackendChoice b) {
      backend = b;
      return this;
    }

    /** Largest PACKED hidden block in bytes, {@code [1, 2^31-1]}. */
    public Builder maxBlockBytes(long bytes) {
      maxBlockBytes = MoePrepConf.PACKED_MAX_BLOCK_BYTES.parse(Long.toString(bytes));
      return this;
    }

    /** Hidden bytes per dispatch chunk ({@code [1, 2^30]}). */
    public Builder chunkBytes(long bytes) {
      chunkBytes = MoePrepConf.DISPATCH_CHUNK_BYTES.parse(Long.toString(bytes));
      return this;
    }

    /** Partitions of the combine stage ({@code 0} = {@code spark.sql.shuffle.partitions}). */
    public Builder combinePartitions(int p) {
      combinePartitions = MoePrepConf.COMBINE_PARTITIONS.parse(Integer.toString(p));
      return this;
    }

    /**
     * What happens to an input row that fails validation: {@link BadRowPolicy#FAIL} (the default)
     * fails the job naming its token id; {@link BadRowPolicy#SKIP} leaves it out, counts it and
     * lists it in {@link PermuteOutput#badRows()}.
     */
    public Builder badRows(BadRowPolicy p) {
      badRows = java.util.Objects.requireNonNull(p, "badRows");
      return this;
    }

    /**
     * Caps the device memory MoePrep holds per GPU and executor ({@code 0}: no cap); a batch that
     * would cross it runs out of device memory (see {@link #oomFallback}).
     */
    public Builder gpuMemoryLimit(long bytes) {
      gpuMemoryLimit = MoePrepConf.GPU_MEMORY_LIMIT.parse(Long.toString(bytes));
      return this;
    }

    /**
     * Whether a batch that runs out of device memory runs again on the CPU, logged and counted in
     * the {@code oomFallbacks} metric (the default), or fails its task.
     */
    public Builder oomFallback(boolean fallback) {
      oomFallback = fallback;
      return this;
    }

    /**
     * Input column names. {@code probs} and {@code batch} are used when the input has them; the
     * others are required.
     */
    public Builder columns(
        String tokenId, String hidden, String expertIds, String probs, String batch) {
      tokenIdCol = tokenId;
      hiddenCol = hidden;
      expertIdsCol = expertIds;
      probsCol = probs;
      batchCol = batch;
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
      return new PermuteSpec(this);
    }
  }
}
