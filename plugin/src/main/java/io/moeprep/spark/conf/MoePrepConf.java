package io.moeprep.spark.conf;

import io.moeprep.kernels.KernelTuning;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Function;

/**
 * Every {@code spark.moeprep.*} setting, typed. Read them from a Spark session with {@code
 * entry.readFrom(k -> spark.conf().get(k, null))}; options given in code ({@code PermuteSpec}) take
 * precedence. The keys under {@value #INTERNAL} tune the kernels for benchmarks and tests: they are
 * documented apart and may change without notice.
 */
public final class MoePrepConf {
  private MoePrepConf() {}

  private static final String PREFIX = "spark.moeprep.";

  /** The prefix of the internal keys. */
  public static final String INTERNAL = PREFIX + "internal.";

  /** Which kernel backend the tasks use. */
  public static final ConfigEntry<String> BACKEND =
      choice(
          "backend",
          "Kernel backend of the permute and unpermute tasks: auto (the GPU when a driver, a"
              + " device and the kernels are present, else the CPU, saying why once), cpu, or cuda"
              + " (fails with the reason when the GPU cannot run).",
          "auto",
          Set.of("auto", "cpu", "cuda"),
          true);

  /** Tokens per batch when the input has no batch column. */
  public static final ConfigEntry<Integer> TOKENS_PER_BATCH =
      intRange(
          "tokensPerBatch",
          "Tokens per batch when the input has no batch column: token t belongs to batch"
              + " t / tokensPerBatch. A rank task holds one batch in memory at a time.",
          8192,
          1,
          Integer.MAX_VALUE,
          true);

  /** Dispatch mode. */
  public static final ConfigEntry<String> DISPATCH =
      choice(
          "dispatch",
          "all_to_all: each token goes through the shuffle only to the ranks owning one of its"
              + " experts, with its routing masked to that rank. all_gather: every rank receives"
              + " the whole batch and masks it itself.",
          "all_to_all",
          Set.of("all_to_all", "all_gather"),
          true);

  /** How the permute's work is laid out over Spark partitions. */
  public static final ConfigEntry<String> PARTITIONING =
      choice(
          "partitioning",
          "rank: the all-to-all, partition r holds rank r (each token crosses the shuffle once per"
              + " rank that receives it; one rank task per rank). batch: each batch goes to one"
              + " task (one shuffle by batch, none when the input is already partitioned by its"
              + " batch column), which permutes it for every rank; rows carry ep_rank, for output"
              + " written per rank. Same bytes per (rank, batch) either way.",
          "rank",
          Set.of("rank", "batch"),
          true);

  /** Partitions of the shuffle by batch. */
  public static final ConfigEntry<Integer> BATCH_PARTITIONS =
      intRange(
          "partitioning.batchPartitions",
          "Partitions of the shuffle by batch under partitioning=batch (each holds whole batches;"
              + " more partitions than batches leaves some empty); 0 uses"
              + " spark.sql.shuffle.partitions.",
          0,
          0,
          Integer.MAX_VALUE,
          true);

  /** Output layout. */
  public static final ConfigEntry<String> LAYOUT =
      choice(
          "layout",
          "rows: one output row per permuted row (convenient for SQL). packed: one row per (rank,"
              + " batch, expert) holding the expert's contiguous [rows, hidden] block.",
          "rows",
          Set.of("rows", "packed"),
          true);

  /** Largest PACKED block. */
  public static final ConfigEntry<Long> PACKED_MAX_BLOCK_BYTES =
      longRange(
          "packed.maxBlockBytes",
          "Largest hidden block of one PACKED row, in bytes; a larger expert segment is split"
              + " into several rows numbered by part.",
          1L << 30,
          1,
          Integer.MAX_VALUE,
          true);

  /** Size of the dispatch chunks. */
  public static final ConfigEntry<Long> DISPATCH_CHUNK_BYTES =
      longRange(
          "dispatch.chunkBytes",
          "Hidden bytes per dispatch chunk: the map side packs the tokens of one (rank, batch)"
              + " into chunks of about this size, so the all-to-all shuffle moves few large"
              + " records. A map task buffers at most 8 chunks' worth before flushing.",
          8L << 20,
          1,
          1L << 30,
          true);

  /** Whether the executor plugin fails when the GPU was asked for and cannot run. */
  public static final ConfigEntry<Boolean> GPU_REQUIRED =
      bool(
          "gpu.required",
          "When true, backend auto fails instead of falling back to the CPU when the GPU cannot"
              + " run (the reason is in the error). When false, the fallback is logged once and"
              + " counted in the fallbacks metric.",
          false,
          true);

  /** Cap on the device memory MoePrep holds per GPU. */
  public static final ConfigEntry<Long> GPU_MEMORY_LIMIT =
      byteSize(
          "gpu.memoryLimit",
          "Most device memory, in bytes, that MoePrep's kernels hold at once on one GPU of an"
              + " executor (all its tasks together); 0 means no cap but the card's. A batch that"
              + " would cross it, or that the card itself cannot hold, runs out of device memory:"
              + " see gpu.oomFallback. Leaves room to cudf or a training process on the same GPU."
              + " Bytes, or with a unit: 512m, 2g.",
          0L,
          true);

  /** What a batch that runs out of device memory does. */
  public static final ConfigEntry<Boolean> GPU_OOM_FALLBACK =
      bool(
          "gpu.oomFallback",
          "When true, a batch that runs out of device memory runs again on the CPU (same bytes),"
              + " with the rank, batch and reason logged and counted in the oomFallbacks metric."
              + " When false, the task fails with that reason.",
          true,
          true);

  /** Whether a permute's ROWS output runs as the columnar plan under RAPIDS. */
  public static final ConfigEntry<Boolean> RAPIDS_COLUMNAR =
      bool(
          "rapids.columnar",
          "With the RAPIDS Accelerator loaded, partitioning=batch, the ROWS layout and"
              + " badRows=fail, rows() (and data()) run as a columnar plan that RAPIDS executes on"
              + " the GPU: collect_list by batch, MoePrep's permute as a columnar UDF, explode; the"
              + " hidden rows stay in device memory from the scan to the writer. false keeps the"
              + " row tasks. PermuteOutput.columnarReason() says why a permute did not take it.",
          true,
          true);

  /** Shuffle partitions of the combine (unpermute) stage. */
  public static final ConfigEntry<Integer> COMBINE_PARTITIONS =
      intRange(
          "combine.partitions",
          "Partitions of the combine stage, which routes expert outputs back by batch; 0 uses"
              + " spark.sql.shuffle.partitions.",
          0,
          0,
          Integer.MAX_VALUE,
          true);

  /** What a permute does with an input row that fails validation. */
  public static final ConfigEntry<String> BAD_ROWS =
      choice(
          "badRows",
          "fail: a bad input row (null, wrong hidden length, expert id out of range, K mismatch,"
              + " NaN prob) fails the job with its token id. skip: bad rows are left out of the"
              + " permute, counted in the moeprep.badRows accumulator (per evaluation: a recomputed"
              + " stage counts again) and listed with their reason in PermuteOutput.badRows(), whose"
              + " count is exact.",
          "fail",
          Set.of("fail", "skip"),
          true);

  /** Share of the executor's memory overhead that the host block cache may keep. */
  public static final ConfigEntry<Double> HOST_CACHE_FRACTION =
      new ConfigEntry<>(
          PREFIX + "memory.hostCacheFraction",
          "Share of the executor's memory overhead (spark.executor.memoryOverhead, else Spark's"
              + " default: spark.executor.memoryOverheadFactor x spark.executor.memory, at least"
              + " 384m) that MoePrep may keep off-heap as a cache of freed host blocks (1 MiB and"
              + " up), at most 2g; 0 turns the cache off. This memory is outside the JVM heap, so it"
              + " counts against the overhead: raise the overhead with it. The executor plugin sets"
              + " it at start-up, frees the cache when the executor stops, and reports its size in"
              + " the hostCacheBytes metric.",
          0.25,
          Double::parseDouble,
          v -> v >= 0 && v <= 1,
          "must be in [0, 1]",
          true);

  /** Internal: worker threads of the CPU backend. */
  public static final ConfigEntry<Integer> CPU_THREADS =
      intRange(
          "internal.cpu.threads",
          "Worker threads of the CPU backend's pool in each executor; 0 uses one per core of the"
              + " executor.",
          0,
          0,
          1 << 16,
          false);

  /** Internal: the fused single-launch routing-map kernel. */
  public static final ConfigEntry<Boolean> CUDA_FUSED_MAP =
      bool(
          "internal.cuda.fusedMap",
          "Builds the routing maps with the fused single-launch kernel; false uses the plan and"
              + " build kernels.",
          KernelTuning.DEFAULT.fusedMap(),
          false);

  /** Internal: the fewest slots per block of the fused map kernel. */
  public static final ConfigEntry<Long> CUDA_FUSED_MIN_BLOCK_SLOTS =
      new ConfigEntry<>(
          INTERNAL + "cuda.fusedMinBlockSlots",
          "Fewest routing slots per block of the fused map kernel.",
          KernelTuning.DEFAULT.fusedMinBlockSlots(),
          Long::parseLong,
          v -> v >= 32 && v <= 1L << 30 && Long.bitCount(v) == 1,
          "must be a power of two in [32, 1073741824]",
          false);

  /** Internal: the most cells the fused map kernel sums without a grid barrier. */
  public static final ConfigEntry<Long> CUDA_FUSED_TAGGED_CELLS =
      longRange(
          "internal.cuda.fusedTaggedCells",
          "Most (block, expert) cells that the fused map kernel sums through its tagged table"
              + " without a grid barrier.",
          KernelTuning.DEFAULT.fusedTaggedCells(),
          0,
          Long.MAX_VALUE,
          false);

  /** Internal: synchronise after every kernel launch. */
  public static final ConfigEntry<Boolean> CUDA_SYNC_LAUNCHES =
      bool(
          "internal.cuda.syncLaunches",
          "Synchronises the stream after every kernel launch, so that a fault names its kernel"
              + " (debugging; slow).",
          KernelTuning.DEFAULT.syncLaunches(),
          false);

  /** Internal: fault injection. */
  public static final ConfigEntry<String> CUDA_FAIL_LAUNCH =
      new ConfigEntry<>(
          INTERNAL + "cuda.failLaunch",
          "Fault injection for tests: launches of the kernels whose name starts with this fail;"
              + " empty for none.",
          "",
          s -> s,
          v -> true,
          "any kernel name prefix, or empty",
          false);

  /** All entries, in documentation order: the user's, then the internal ones. */
  public static final List<ConfigEntry<?>> ALL =
      List.of(
          BACKEND,
          DISPATCH,
          PARTITIONING,
          BATCH_PARTITIONS,
          LAYOUT,
          TOKENS_PER_BATCH,
          BAD_ROWS,
          PACKED_MAX_BLOCK_BYTES,
          DISPATCH_CHUNK_BYTES,
          GPU_REQUIRED,
          GPU_MEMORY_LIMIT,
          GPU_OOM_FALLBACK,
          RAPIDS_COLUMNAR,
          COMBINE_PARTITIONS,
          HOST_CACHE_FRACTION,
          CPU_THREADS,
          CUDA_FUSED_MAP,
          CUDA_FUSED_MIN_BLOCK_SLOTS,
          CUDA_FUSED_TAGGED_CELLS,
          CUDA_SYNC_LAUNCHES,
          CUDA_FAIL_LAUNCH);

  /**
   * Checks every {@code spark.moeprep.*} key of a configuration up front: each names an entry of
   * {@link #ALL}, and its value parses and passes the entry's check. Keys outside {@code
   * spark.moeprep.*} are ignored.
   *
   * @param settings keys and raw values, such as a Spark configuration or the JVM's system
   *     properties
   * @throws IllegalArgumentException for the first unknown key or invalid value (sorted by key), in
   *     the form {@code 'gpu' in spark.moeprep.backend is invalid: must be one of auto, cpu, cuda}
   */
  public static void checkAll(Map<String, String> settings) {
    Map<String, ConfigEntry<?>> byKey = new TreeMap<>();
    for (ConfigEntry<?> e : ALL) {
      byKey.put(e.key(), e);
    }
    for (Map.Entry<String, String> s : new TreeMap<>(settings).entrySet()) {
      if (!s.getKey().startsWith(PREFIX)) {
        continue;
      }
      ConfigEntry<?> e = byKey.get(s.getKey());
      if (e == null) {
        throw new IllegalArgumentException(
            s.getKey() + " is not a MoePrep setting: check its spelling against docs/configs.md");
      }
      e.parse(s.getValue());
    }
  }

  private static ConfigEntry<String> choice(
      String name, String doc, String def, Set<String> values, boolean user) {
    List<String> sorted = values.stream().sorted().toList();
    return new ConfigEntry<>(
        PREFIX + name,
        doc,
        def,
        s -> s.toLowerCase(Locale.ROOT),
        values::contains,
        "must be one of " + String.join(", ", sorted),
        user);
  }

  private static ConfigEntry<Integer> intRange(
      String name, String doc, int def, int min, int max, boolean user) {
    return new ConfigEntry<>(
        PREFIX + name,
        doc,
        def,
        Integer::parseInt,
        v -> v >= min && v <= max,
        "must be in [" + min + ", " + max + "]",
        user);
  }

  private static ConfigEntry<Long> longRange(
      String name, String doc, long def, long min, long max, boolean user) {
    return new ConfigEntry<>(
        PREFIX + name,
        doc,
        def,
        Long::parseLong,
        v -> v >= min && v <= max,
        "must be in [" + min + ", " + max + "]",
        user);
  }

  private static ConfigEntry<Long> byteSize(String name, String doc, long def, boolean user) {
    return new ConfigEntry<>(
        PREFIX + name,
        doc,
        def,
        // a plain count of bytes parses without Spark's class (the cudf route's GPU test runs
        // without Spark); a size with a unit is Spark's to read
        s ->
            !s.isEmpty() && s.chars().allMatch(c -> c >= '0' && c <= '9')
                ? Long.parseLong(s)
                : org.apache.spark.network.util.JavaUtils.byteStringAsBytes(s),
        v -> v >= 0,
        "must be a size in bytes >= 0, such as 1073741824, 512m or 2g",
        user);
  }

  private static ConfigEntry<Boolean> bool(String name, String doc, boolean def, boolean user) {
    Function<String, Boolean> p =
        s -> {
          if (s.equalsIgnoreCase("true") || s.equalsIgnoreCase("false")) {
            return Boolean.parseBoolean(s);
          }
          throw new IllegalArgumentException(s);
        };
    return new ConfigEntry<>(PREFIX + name, doc, def, p, v -> true, "must be true or false", user);
  }
}
