package io.moeprep.kernels.contract;

/**
 * How many of the valid slots permute keeps (contract, Permute step 2). A dropped slot behaves
 * exactly like a {@code -1} slot.
 */
public sealed interface CapacityPolicy {

  /** Keep every valid slot. */
  CapacityPolicy NONE = new Unlimited();

  /** Keep every valid slot. */
  record Unlimited() implements CapacityPolicy {}

  /**
   * Global truncation: keep the first {@code numOut} slots of the (expert, token, slot) order; when
   * fewer are valid, the output still has {@code numOut} rows and the extra rows are zero with
   * source {@code -1}.
   */
  record NumOut(long numOut) implements CapacityPolicy {
    public NumOut {
      if (numOut < 0 || numOut > Integer.MAX_VALUE) {
        throw new IllegalArgumentException(
            "numOut = " + numOut + " is invalid: must be in [0, 2^31-1]");
      }
    }
  }

  /**
   * Keep each expert's first {@code capacity} slots in token order; with {@code padToCapacity},
   * every local expert's segment has exactly {@code capacity} rows (zero rows after its kept ones).
   */
  record PerExpert(long capacity, boolean padToCapacity) implements CapacityPolicy {
    public PerExpert {
      if (capacity < 0 || capacity > Integer.MAX_VALUE) {
        throw new IllegalArgumentException(
            "capacity = " + capacity + " is invalid: must be in [0, 2^31-1]");
      }
    }
  }

  /** Keep every valid slot. */
  static CapacityPolicy none() {
    return NONE;
  }

  /** Global truncation to {@code m} rows. */
  static CapacityPolicy numOut(long m) {
    return new NumOut(m);
  }

  /** Per-expert capacity {@code c}, optionally padded to exactly {@code c} rows. */
  static CapacityPolicy perExpert(long c, boolean padToCapacity) {
    return new PerExpert(c, padToCapacity);
  }
}
