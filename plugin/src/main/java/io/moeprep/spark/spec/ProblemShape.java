package io.moeprep.spark.spec;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteOptions;
import java.io.Serializable;
import java.util.List;

/**
 * What a permute computes: {@code E} experts over {@code R} ranks (contiguous, or an explicit
 * expert-to-rank placement), {@code H} elements of a dtype per token, {@code K} slots per token,
 * the capacity and alignment of the contract, and the tokens per batch of an input without a batch
 * column. Checked when made: every invalid combination fails here, with the kernels' messages.
 *
 * @param numExperts {@code E}
 * @param epSize {@code R}, the number of ranks
 * @param placement the rank of each expert, or empty for the contiguous placement
 * @param hidden {@code H}, elements per token
 * @param dtype the element type of the hidden rows
 * @param topK {@code K}, slots per token
 * @param capacity the capacity policy
 * @param align each local expert segment is padded with zero rows to a multiple of this
 * @param tokensPerBatch tokens per batch when the input has no batch column: token {@code t} is in
 *     batch {@code t / tokensPerBatch}
 */
public record ProblemShape(
    int numExperts,
    int epSize,
    List<Integer> placement,
    int hidden,
    DType dtype,
    int topK,
    Capacity capacity,
    int align,
    int tokensPerBatch)
    implements Serializable {

  /** Checks the combination by building the kernels' own objects. */
  public ProblemShape {
    placement = List.copyOf(placement);
    new PermuteOptions(
        numExperts, placementOf(numExperts, epSize, placement), 0, capacity.policy(), align);
  }

  /**
   * Which capacity policy of the contract applies, as a value that travels with the job.
   *
   * @param kind the policy
   * @param value {@code numOut} or the per-expert capacity ({@code 0} for {@link Kind#NONE})
   * @param padToCapacity per-expert only: pad each local segment to exactly {@code value} rows
   */
  public record Capacity(Kind kind, long value, boolean padToCapacity) implements Serializable {
    /** Keep every valid slot. */
    public static final Capacity NONE = new Capacity(Kind.NONE, 0, false);

    /** The policies. */
    public enum Kind {
      /** Keep every valid slot. */
      NONE,
      /** Keep the first {@code numOut} slots of the (expert, token, slot) order; pad to it. */
      NUM_OUT,
      /** Keep each expert's first {@code capacity} slots; optionally pad each segment to it. */
      PER_EXPERT
    }

    /** Checks the value as the kernels do. */
    public Capacity {
      policyOf(kind, value, padToCapacity);
    }

    /** The kernels' capacity policy. */
    public CapacityPolicy policy() {
      return policyOf(kind, value, padToCapacity);
    }

    /**
     * This capacity in the syntax of the {@code capacity} option ({@link PermuteSpec#fromOptions}):
     * {@code none}, {@code numOut:M}, {@code perExpert:C} or {@code perExpertPadded:C}.
     */
    public String optionValue() {
      return switch (kind) {
        case NONE -> "none";
        case NUM_OUT -> "numOut:" + value;
        case PER_EXPERT -> (padToCapacity ? "perExpertPadded:" : "perExpert:") + value;
      };
    }

    private static CapacityPolicy policyOf(Kind kind, long value, boolean pad) {
      return switch (kind) {
        case NONE -> CapacityPolicy.NONE;
        case NUM_OUT -> CapacityPolicy.numOut(value);
        case PER_EXPERT -> CapacityPolicy.perExpert(value, pad);
      };
    }
  }

  /** Bytes of one hidden row, {@code H * sizeof(dtype)}. */
  public long rowBytes() {
    return dtype.rowBytes(hidden);
  }

  /** The expert-to-rank placement (contiguous unless an explicit table was given). */
  public ExpertPlacement expertPlacement() {
    return placementOf(numExperts, epSize, placement);
  }

  /** The kernels' capacity policy. */
  public CapacityPolicy capacityPolicy() {
    return capacity.policy();
  }

  /** The kernels' options for rank {@code rank}. */
  public PermuteOptions optionsForRank(int rank) {
    return new PermuteOptions(numExperts, expertPlacement(), rank, capacity.policy(), align);
  }

  private static ExpertPlacement placementOf(int numExperts, int epSize, List<Integer> placement) {
    if (placement.isEmpty()) {
      return ExpertPlacement.contiguous(numExperts, epSize);
    }
    return ExpertPlacement.explicit(
        placement.stream().mapToInt(Integer::intValue).toArray(), epSize);
  }
}
