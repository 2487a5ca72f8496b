package io.moeprep.app.cli;

import io.moeprep.kernels.contract.CapacityPolicy;
import picocli.CommandLine.Option;

/**
 * The capacity options of the contract, shared by {@code moeprep permute} and {@code
 * moeprep-kernels permute} (a picocli mixin): {@code --num-out M}, {@code --capacity C}, {@code
 * --pad-to-capacity}, {@code --align A}; checked and turned into a {@link CapacityPolicy} in one
 * place.
 */
public final class CapacityOptions {
  @Option(
      names = "--num-out",
      paramLabel = "M",
      description = "keep the first M slots (per rank and batch), pad to M rows")
  Long numOut;

  @Option(
      names = "--capacity",
      paramLabel = "C",
      description = "keep each expert's first C slots (per batch)")
  Long capacity;

  @Option(names = "--pad-to-capacity", description = "pad every expert segment to exactly C rows")
  boolean padToCapacity;

  @Option(
      names = "--align",
      paramLabel = "A",
      description = "pad every expert segment to a multiple of A rows")
  Integer align;

  /**
   * Checks the options together: one capacity at most, {@code --pad-to-capacity} only with one,
   * {@code --align} not with {@code --num-out}, values in range.
   *
   * @param other the command's other option that gives a per-expert capacity (such as {@code
   *     --capacity-factor F}), or null when it has none
   * @param otherGiven whether that option was given
   */
  public void check(String other, boolean otherGiven) {
    int caps = (numOut != null ? 1 : 0) + (capacity != null ? 1 : 0) + (otherGiven ? 1 : 0);
    String otherName = other == null ? null : other.split(" ")[0];
    if (caps > 1) {
      throw new IllegalArgumentException(
          "--num-out"
              + (other != null ? ", --capacity and " + otherName : " and --capacity")
              + " exclude each other: give one");
    }
    if (padToCapacity && capacity == null && !otherGiven) {
      throw new IllegalArgumentException(
          "--pad-to-capacity needs --capacity C" + (other != null ? " or " + other : ""));
    }
    if (align != null && numOut != null) {
      throw new IllegalArgumentException(
          "--align cannot be combined with --num-out: choose one of them");
    }
    if (numOut != null) {
      OptionChecks.inRange("--num-out", numOut, 0, Integer.MAX_VALUE);
    }
    if (capacity != null) {
      OptionChecks.inRange("--capacity", capacity, 0, Integer.MAX_VALUE);
    }
    if (align != null) {
      OptionChecks.inRange("--align", align, 1, Integer.MAX_VALUE);
    }
  }

  /** The {@code --capacity} given, or null. */
  public Long capacity() {
    return capacity;
  }

  /** The alignment ({@code 1} when not given). */
  public int align() {
    return align == null ? 1 : align;
  }

  /** Whether {@code --align} was given. */
  public boolean alignGiven() {
    return align != null;
  }

  /**
   * The policy of the options: {@code --num-out}, else a per-expert capacity ({@code
   * perExpertCapacity}: {@code --capacity} or what the other option gave), else none.
   */
  public CapacityPolicy policy(Long perExpertCapacity) {
    if (numOut != null) {
      return CapacityPolicy.numOut(numOut);
    }
    if (perExpertCapacity != null) {
      return CapacityPolicy.perExpert(perExpertCapacity, padToCapacity);
    }
    return CapacityPolicy.NONE;
  }

  /**
   * The policy in the syntax of the spec's {@code capacity} option ({@code numOut:M}, {@code
   * perExpert:C}, {@code perExpertPadded:C}), or null for none.
   */
  public static String optionValue(CapacityPolicy p) {
    if (p instanceof CapacityPolicy.NumOut n) {
      return "numOut:" + n.numOut();
    }
    if (p instanceof CapacityPolicy.PerExpert e) {
      return (e.padToCapacity() ? "perExpertPadded:" : "perExpert:") + e.capacity();
    }
    return null;
  }
}
