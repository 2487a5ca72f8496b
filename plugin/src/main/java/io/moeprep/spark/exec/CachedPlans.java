package io.moeprep.spark.exec;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.execution.CachedData;
import org.apache.spark.storage.StorageLevel;
import scala.Option;

/**
 * Persists a plan and materializes its cache at once, with one job that reads every partition to
 * its end.
 *
 * <p>Why not {@code dataset.persist(level)} alone: under adaptive query execution (the default),
 * Spark 4.1 materializes a cached plan that no job has read yet with a job that takes each
 * partition's block and never reads it ({@code TableCacheQueryStageExec}). Each partition's block
 * then stays read-locked until its task ends: the executor logs {@code 1 block locks were not
 * released by task ...} once per partition, and with {@code spark.storage.exceptionOnPinLeak=true}
 * the job fails with {@code [INTERNAL_ERROR_EXECUTOR]}. A cache materialized here is never read
 * that way: adaptive execution finds it loaded.
 */
public final class CachedPlans {
  private CachedPlans() {}

  /** Persists {@code plan} at {@code level} and fills its cache now; returns {@code plan}. */
  public static <T> Dataset<T> persistMaterialized(Dataset<T> plan, StorageLevel level) {
    plan.persist(level);
    org.apache.spark.sql.classic.Dataset<T> classic =
        (org.apache.spark.sql.classic.Dataset<T>) plan;
    Option<CachedData> cached =
        classic.sparkSession().sharedState().cacheManager().lookupCachedData(classic);
    if (cached.isDefined()) {
      // RDD.count reads each partition's iterator to its end, which releases the block's lock
      cached.get().cachedRepresentation().cacheBuilder().cachedColumnBuffers().count();
    }
    return plan;
  }
}
