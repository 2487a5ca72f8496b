package io.moeprep.spark;

import io.moeprep.spark.sql.RoutingFunctions;
import org.apache.spark.sql.SparkSessionExtensions;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * MoePrep's SQL helpers ({@code spark.sql.extensions=io.moeprep.spark.MoePrepExtensions}): the
 * functions {@code moe_mask_rank(expert_ids, rank, num_experts, ep_size)} and {@code
 * moe_ranks(expert_ids, num_experts, ep_size)}. Permute and unpermute are reachable from SQL and
 * PySpark through the {@code moeprep} data source ({@link io.moeprep.spark.sql.MoePrepSource}).
 */
public final class MoePrepExtensions extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  @Override
  public BoxedUnit apply(SparkSessionExtensions ext) {
    ext.injectFunction(RoutingFunctions.maskRank());
    ext.injectFunction(RoutingFunctions.ranks());
    return BoxedUnit.UNIT;
  }
}
