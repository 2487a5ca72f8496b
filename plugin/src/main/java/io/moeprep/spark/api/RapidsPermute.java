package io.moeprep.spark.api;

import ai.rapids.cudf.Table;
import io.moeprep.spark.rapids.CudfPermuter;
import io.moeprep.spark.rapids.CudfTables;
import io.moeprep.spark.rapids.RapidsRoute;
import io.moeprep.spark.spec.Partitioning;
import org.apache.spark.api.java.JavaRDD;

/**
 * The RAPIDS route of a permute: the permuted batches as cudf tables, computed on the GPU from the
 * cudf tables that the RAPIDS Accelerator hands over, without a host round trip of the hidden data.
 *
 * <pre>{@code
 * PermuteOutput out = MoePrep.permute(tokens, spec);         // in a session with RAPIDS active
 * JavaRDD<Table> tables = RapidsPermute.tables(out);         // partition r: rank r's tables
 * tables.foreachPartition(it -> it.forEachRemaining(t -> { try (t) { feed(t); } }));
 * }</pre>
 *
 * <p>Each table holds consecutive output rows of one (rank, batch) in the columns of {@link
 * CudfPermuter#COLUMNS} (the {@code ROWS} layout); a batch whose hidden data would pass cudf's
 * 2^31-byte limit per LIST column comes as several tables. As with every RAPIDS {@code
 * ColumnarRdd}, the consumer closes each table, and the RDD must not be shuffled or cached.
 *
 * <p>Only a session whose {@link PermuteOutput#route()} {@link RapidsRoute#usesCudf() uses cudf}
 * gets tables; any other fails with the route's reason, without loading a cudf class. The RAPIDS
 * jar is reached by reflection (it is not a compile dependency); put the MoePrep jar on the same
 * class path as the RAPIDS jar, whose cudf classes the tables are.
 */
public final class RapidsPermute {
  private RapidsPermute() {}

  /** The permuted batches as cudf tables, split at cudf's limit of 2^31 - 1 bytes per column. */
  public static JavaRDD<Table> tables(PermuteOutput out) {
    return tables(out, CudfPermuter.CUDF_MAX_CHILD_BYTES);
  }

  /**
   * As {@link #tables(PermuteOutput)}, with at most {@code maxPieceBytes} hidden bytes per table.
   *
   * @throws IllegalStateException when the session does not run the RAPIDS route, with the reason
   */
  public static JavaRDD<Table> tables(PermuteOutput out, long maxPieceBytes) {
    RapidsRoute route = out.route();
    if (!route.usesCudf()) {
      throw new IllegalStateException(
          "the cudf route is not available in this session: " + route.describe());
    }
    if (out.spec().settings().partitioning() != Partitioning.RANK) {
      throw new IllegalStateException(
          "the cudf route gives rank r's tables in partition r: plan the permute with"
              + " partitioning rank (spark.moeprep.partitioning=rank), not "
              + out.spec().settings().partitioning().name().toLowerCase(java.util.Locale.ROOT));
    }
    return CudfTables.permute(out.dispatched(), out.spec(), out.hasProbs(), maxPieceBytes);
  }
}
