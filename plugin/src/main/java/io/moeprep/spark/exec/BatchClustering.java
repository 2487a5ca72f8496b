package io.moeprep.spark.exec;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.plans.physical.ClusteredDistribution;
import org.apache.spark.sql.catalyst.plans.physical.Partitioning;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Whether a plan's partitions already hold whole batches, so that the permute by batch needs no
 * shuffle: the physical plan's output partitioning (as Spark's own planner sees it, before any
 * exchange MoePrep would add) clusters the rows by the batch column, or there is one partition. An
 * input repartitioned by its batch column ({@code repartition(col("batch"))}, a table bucketed by
 * batch) qualifies; a file scan does not, since Spark does not know how the files were cut.
 */
public final class BatchClustering {
  private BatchClustering() {}

  /**
   * True when every batch of {@code plan} lies in one partition.
   *
   * @param batchColumn the name of the batch column in {@code plan}, or null when the batch is
   *     derived from the token id (then only a single partition qualifies)
   */
  public static boolean holdsWholeBatches(Dataset<?> plan, String batchColumn) {
    org.apache.spark.sql.classic.Dataset<?> classic =
        (org.apache.spark.sql.classic.Dataset<?>) plan;
    Partitioning p = classic.queryExecution().sparkPlan().outputPartitioning();
    if (p.numPartitions() == 1) {
      return true;
    }
    if (batchColumn == null) {
      return false;
    }
    Expression batch = (Expression) classic.resolve(batchColumn);
    ClusteredDistribution byBatch =
        new ClusteredDistribution(
            CollectionConverters.asScala(java.util.List.of(batch)).toSeq(), false, Option.empty());
    return p.satisfies(byBatch);
  }
}
