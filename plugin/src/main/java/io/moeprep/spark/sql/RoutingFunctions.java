package io.moeprep.spark.sql;

import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.spark.spec.RankMasks;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.stream.IntStream;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.encoders.ExpressionEncoder;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.expressions.ScalaUDF;
import org.apache.spark.sql.types.DataTypes;
import scala.Option;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractFunction3;
import scala.runtime.AbstractFunction4;

/**
 * The SQL functions of {@link io.moeprep.spark.MoePrepExtensions}, with a contiguous placement
 * (rank r owns experts {@code [r*E/R, (r+1)*E/R)}).
 *
 * <ul>
 *   <li>{@code moe_mask_rank(expert_ids, rank, num_experts, ep_size)}: the routing masked to the
 *       rank, ids of other ranks replaced by -1 ({@code maskToRank} of the contract).
 *   <li>{@code moe_ranks(expert_ids, num_experts, ep_size)}: the ranks owning at least one of the
 *       ids, ascending (the destinations of ALL_TO_ALL dispatch).
 * </ul>
 *
 * Ids outside {@code [0, E)} other than -1 fail with a message naming the slot and value.
 */
public final class RoutingFunctions {
  private RoutingFunctions() {}

  /** {@code moe_mask_rank} for {@code injectFunction}. */
  public static Tuple3<
          FunctionIdentifier, ExpressionInfo, scala.Function1<Seq<Expression>, Expression>>
      maskRank() {
    return function(
        "moe_mask_rank",
        "moe_mask_rank(expert_ids, rank, num_experts, ep_size) - the routing masked to an EP"
            + " rank: ids owned by other ranks become -1.",
        "> SELECT moe_mask_rank(array(3, 2), 1, 4, 2);\n       [3,2]",
        4,
        new MaskRank());
  }

  /** The body of {@code moe_mask_rank}; serializable, as it travels with the tasks. */
  private static final class MaskRank
      extends AbstractFunction4<Object, Object, Object, Object, Object>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public Object apply(Object ids, Object rank, Object e, Object r) {
      if (ids == null || rank == null || e == null || r == null) {
        return null;
      }
      int[] a = ints(ids, ((Number) e).intValue());
      ExpertPlacement p =
          ExpertPlacement.contiguous(((Number) e).intValue(), ((Number) r).intValue());
      int rk = ((Number) rank).intValue();
      if (rk < 0 || rk >= p.numRanks()) {
        throw new IllegalArgumentException(
            "rank = " + rk + " is out of range [0, " + p.numRanks() + ")");
      }
      int[] masked = RankMasks.perRank(a, p)[rk];
      if (masked == null) {
        masked = new int[a.length];
        Arrays.fill(masked, -1);
      }
      return masked;
    }
  }

  /** {@code moe_ranks} for {@code injectFunction}. */
  public static Tuple3<
          FunctionIdentifier, ExpressionInfo, scala.Function1<Seq<Expression>, Expression>>
      ranks() {
    return function(
        "moe_ranks",
        "moe_ranks(expert_ids, num_experts, ep_size) - the EP ranks owning at least one of the"
            + " ids, ascending.",
        "> SELECT moe_ranks(array(0, 3), 4, 2);\n       [0,1]",
        3,
        new Ranks());
  }

  /** A function of {@code arity} arguments, described for {@code DESCRIBE FUNCTION}. */
  private static Tuple3<
          FunctionIdentifier, ExpressionInfo, scala.Function1<Seq<Expression>, Expression>>
      function(String name, String usage, String example, int arity, Object body) {
    ExpressionInfo info =
        new ExpressionInfo(
            RoutingFunctions.class.getName(),
            null,
            name,
            usage,
            "",
            "\n    Examples:\n      " + example + "\n",
            "",
            "misc_funcs",
            "0.1.0",
            "",
            "built-in");
    return new Tuple3<>(FunctionIdentifier.apply(name), info, builder(name, arity, body));
  }

  /** The body of {@code moe_ranks}; serializable, as it travels with the tasks. */
  private static final class Ranks extends AbstractFunction3<Object, Object, Object, Object>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public Object apply(Object ids, Object e, Object r) {
      if (ids == null || e == null || r == null) {
        return null;
      }
      int[] a = ints(ids, ((Number) e).intValue());
      ExpertPlacement p =
          ExpertPlacement.contiguous(((Number) e).intValue(), ((Number) r).intValue());
      int[][] masked = RankMasks.perRank(a, p);
      return IntStream.range(0, masked.length).filter(rk -> masked[rk] != null).toArray();
    }
  }

  private static int[] ints(Object seq, int numExperts) {
    scala.collection.Seq<?> s = (scala.collection.Seq<?>) seq;
    int[] a = new int[s.length()];
    for (int j = 0; j < a.length; j++) {
      Object x = s.apply(j);
      if (x == null) {
        throw new IllegalArgumentException("expert_ids[" + j + "] is null");
      }
      long v = ((Number) x).longValue();
      if (v < -1 || v >= numExperts) {
        throw new IllegalArgumentException(
            "expert_ids[" + j + "] = " + v + " is out of range [0, " + numExperts + ") or -1");
      }
      a[j] = (int) v;
    }
    return a;
  }

  private static scala.Function1<Seq<Expression>, Expression> builder(
      String name, int arity, Object function) {
    return new AbstractFunction1<>() {
      @Override
      public Expression apply(Seq<Expression> children) {
        if (children.length() != arity) {
          throw new IllegalArgumentException(
              name + " takes " + arity + " arguments, got " + children.length());
        }
        Seq<Option<ExpressionEncoder<?>>> noEncoders =
            CollectionConverters.asScala(new ArrayList<Option<ExpressionEncoder<?>>>()).toList();
        return new ScalaUDF(
            function,
            DataTypes.createArrayType(DataTypes.IntegerType, false),
            children,
            noEncoders,
            Option.empty(),
            Option.apply(name),
            true,
            true);
      }
    };
  }
}
