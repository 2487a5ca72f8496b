package io.moeprep.spark.api;

import io.moeprep.spark.conf.MoePrepConf;
import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.exec.CachedPlans;
import io.moeprep.spark.exec.RankBatchRunner;
import io.moeprep.spark.exec.RankOutput;
import io.moeprep.spark.rapids.ColumnarPermute;
import io.moeprep.spark.rapids.RapidsRoute;
import io.moeprep.spark.spec.BadRowPolicy;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.Partitioning;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.util.Locale;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.util.LongAccumulator;

/**
 * The outputs of one permute, each a lazy {@link Dataset} whose rows carry their {@code ep_rank}
 * and {@code batch}. How they lie in partitions follows the spec's {@link Partitioning}: under
 * {@link Partitioning#RANK} (the default) partition {@code r} holds rank {@code r}, batch by batch;
 * under {@link Partitioning#BATCH} a partition holds whole batches, each batch's ranks one after
 * the other ({@code write().partitionBy("ep_rank")} stores them per rank). Either way each (rank,
 * batch) is in permuted order and has the same bytes. Each output is computed by its own Spark job
 * over the same dispatch plan: {@link #persist} it (or persist the input) when several are needed.
 */
public final class PermuteOutput {
  private final Dataset<Row> dispatched;
  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final RapidsRoute route;
  private final Dataset<Row> badRows;
  private final LongAccumulator badRowCount;
  private final BatchCounters counters;
  private final Dataset<Row> selected;
  private final String columnarReason;
  private final boolean hasBatch;

  PermuteOutput(
      Dataset<Row> dispatched,
      PermuteSpec spec,
      boolean hasProbs,
      Dataset<Row> badRows,
      LongAccumulator badRowCount,
      BatchCounters counters,
      Dataset<Row> selected,
      boolean hasBatch) {
    this.counters = counters;
    this.badRows = badRows;
    this.badRowCount = badRowCount;
    this.dispatched = dispatched;
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.route =
        RapidsRoute.plan(
            dispatched.sparkSession(), spec.settings().backend(), spec.settings().layout());
    this.columnarReason = columnarReason(selected);
    this.hasBatch = hasBatch;
    this.selected = selected;
  }

  /** Why {@link #rows()} does not run as the columnar plan, or null when it does. */
  private String columnarReason(Dataset<Row> selected) {
    SparkSession spark = selected.sparkSession();
    if (!MoePrepConf.RAPIDS_COLUMNAR.readFrom(k -> spark.conf().get(k, null))) {
      return MoePrepConf.RAPIDS_COLUMNAR.key() + "=false";
    }
    if (route.path() != RapidsRoute.Path.RAPIDS_CUDF
        && route.path() != RapidsRoute.Path.RAPIDS_EXPLAIN_ONLY) {
      return "path " + route.path() + ": no RAPIDS Accelerator to run it";
    }
    if (spec.settings().partitioning() != Partitioning.BATCH) {
      return "partitioning=" + spec.settings().partitioning().name().toLowerCase(Locale.ROOT);
    }
    if (spec.settings().badRows() != BadRowPolicy.FAIL) {
      return "badRows=" + spec.settings().badRows().name().toLowerCase(Locale.ROOT);
    }
    return ColumnarPermute.unsupported(selected.schema());
  }

  /**
   * Why {@link #rows()} (and {@link #data()} in the {@code ROWS} layout) does not run as the
   * columnar device plan under RAPIDS ({@link ColumnarPermute}), or null when it does.
   */
  public String columnarReason() {
    return columnarReason;
  }

  /**
   * The path this permute takes in its session (CPU, rows on CUDA, or the RAPIDS cudf route, also
   * when RAPIDS only explains), decided when it was planned and logged once.
   */
  public RapidsRoute route() {
    return route;
  }

  /** {@link #route()} in one line, such as {@code MoePrep path RAPIDS_EXPLAIN_ONLY: ...}. */
  public String executionPath() {
    return route.describe()
        + (columnarReason == null
            ? "; rows() runs as a columnar plan (collect_list by batch, MoePrep's permute as a"
                + " columnar UDF, explode)"
            : "");
  }

  /** Whether the input has probs (then every output carries them). */
  public boolean hasProbs() {
    return hasProbs;
  }

  /** The permuted data in the spec's layout ({@link #rows()} or {@link #packed()}). */
  public Dataset<Row> data() {
    return spec.settings().layout() == Layout.PACKED ? packed() : rows();
  }

  /** {@link Schemas#ROWS}: one row per output row of each (rank, batch). */
  public Dataset<Row> rows() {
    if (columnarReason == null) {
      // RAPIDS is loaded on this path: the UDF gets its columnar form
      return ColumnarPermute.rows(selected, hasBatch, spec, hasProbs, counters, true);
    }
    return run(RankOutput.ROWS);
  }

  /** {@link Schemas#PACKED}: one row per (rank, batch, expert segment, part). */
  public Dataset<Row> packed() {
    return run(RankOutput.PACKED);
  }

  /** {@link Schemas#ROW_MAP}: the output row of every slot, per (rank, batch, token). */
  public Dataset<Row> rowMap() {
    return run(RankOutput.ROW_MAP);
  }

  /** {@link Schemas#TOKENS_PER_EXPERT}: kept, dropped and segment per (rank, batch, expert). */
  public Dataset<Row> tokensPerExpert() {
    return run(RankOutput.TOKENS_PER_EXPERT);
  }

  /**
   * {@link io.moeprep.spark.sink.ShardSchema#SHARDS}: every tensor of each (rank, batch), in one or
   * more parts of at most {@code spark.moeprep.packed.maxBlockBytes} of permuted rows, ready for
   * the safetensors sink, which writes one file per (rank, batch):
   *
   * <pre>{@code
   * out.shards().write().format("moeprep-safetensors").mode("overwrite").save(dir);
   * }</pre>
   *
   * <p>{@code source_token} indexes {@code token_id}, the batch's tokens on that rank (under
   * ALL_TO_ALL, those with an expert there). Best with {@link Partitioning#BATCH}: the files are
   * per (rank, batch), so no consumer needs partition r to be rank r.
   */
  public Dataset<Row> shards() {
    return run(RankOutput.SHARDS);
  }

  /**
   * The dispatched records ({@link Schemas#DISPATCH}), partitioned by rank (or by batch under
   * {@link Partitioning#BATCH}), sorted by batch.
   */
  public Dataset<Row> dispatched() {
    return dispatched;
  }

  /**
   * Persists the dispatch plan that every output reads ({@link #dispatched()}) at {@code level} and
   * fills the cache now, with one job that reads every rank partition to its end; the outputs
   * computed afterwards read the cache instead of dispatching again. Returns this output; {@link
   * #unpersist()} frees the cache.
   *
   * <p>Prefer this to {@code dispatched().persist(level)}: Spark 4.1's adaptive execution fills a
   * cache that no job has read yet with a job that leaves each partition's block read-locked until
   * its task ends ({@code 1 block locks were not released by task ...} per rank partition, a failed
   * job with {@code spark.storage.exceptionOnPinLeak=true}); a cache filled here is never filled
   * that way.
   */
  public PermuteOutput persist(StorageLevel level) {
    CachedPlans.persistMaterialized(dispatched, level);
    return this;
  }

  /** Frees the cache of {@link #persist}; returns this output. */
  public PermuteOutput unpersist() {
    dispatched.unpersist();
    return this;
  }

  /**
   * The side table of bad input rows ({@link Schemas#BAD_ROWS}: token_id, batch, reason), one row
   * per input row that fails validation, computed by its own job over the input. Under {@link
   * BadRowPolicy#SKIP} these are exactly the rows the permute left out; under {@link
   * BadRowPolicy#FAIL} it lists the rows that would fail the job (the first one met does).
   */
  public Dataset<Row> badRows() {
    return badRows;
  }

  /**
   * The {@code moeprep.badRows} accumulator counting the rows skipped under {@link
   * BadRowPolicy#SKIP} (null under FAIL). Like any accumulator updated in a transformation, it adds
   * once per evaluation of the dispatch: each output computed (and each re-run stage) adds again.
   * {@code badRows().count()} is the exact number.
   */
  public LongAccumulator badRowCount() {
    return badRowCount;
  }

  /**
   * The named accumulators {@code moeprep.permute.*} of this permute (rows, bytes, batches on the
   * GPU and the CPU, fallbacks), updated by the tasks that compute {@link #data()}; see {@link
   * BatchCounters} for exactly what they count.
   */
  public BatchCounters counters() {
    return counters;
  }

  /** The resolved spec this output was planned with. */
  public PermuteSpec spec() {
    return spec;
  }

  private Dataset<Row> run(RankOutput out) {
    return dispatched.mapPartitions(
        new RankBatchRunner(spec, out, hasProbs, counters), Encoders.row(out.schema()));
  }

  /** One line: the path, the spec, and whether the input has probs. */
  @Override
  public String toString() {
    return "PermuteOutput[" + route.path() + ", probs " + hasProbs + ", " + spec + "]";
  }
}
