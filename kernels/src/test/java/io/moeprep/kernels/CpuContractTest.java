package io.moeprep.kernels;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.OracleCheck;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The CPU backend against the naive oracle on fresh random cases: every dtype, H in {1, 3, 7, 100,
 * 4097}, K in {1, 2, 8, 129}, E in {1, 7, 256}, -1 densities from 0 to 100%, every capacity mode,
 * alignment, masking to a rank, N = 0.
 */
@ExtendWith(LeakCheck.class)
class CpuContractTest {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);
  private static final SplittableRandom RND = Seeds.fresh("CpuContractTest");
  private static final int[] HIDDEN = {1, 3, 7, 100, 4097};
  private static final int[] TOPK = {1, 2, 8, 129};
  private static final int[] EXPERTS = {1, 7, 256};
  private static final double[] DENSITY = {0, 0.1, 0.5, 0.9, 1.0};

  /** One random case per (dtype, H, K), with E, density, capacity and masking drawn at random. */
  static Stream<Arguments> cases() {
    List<Arguments> out = new ArrayList<>();
    long caseSeed = RND.nextLong();
    for (DType d : DType.values()) {
      for (int h : HIDDEN) {
        for (int k : TOPK) {
          for (int rep = 0; rep < 2; rep++) {
            out.add(Arguments.of(d, h, k, caseSeed++));
          }
        }
      }
    }
    return out.stream();
  }

  @ParameterizedTest(name = "{0} H={1} K={2} seed={3}")
  @MethodSource("cases")
  void permuteAndUnpermuteMatchTheOracle(DType dtype, int h, int k, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    int e = EXPERTS[rnd.nextInt(EXPERTS.length)];
    double density = DENSITY[rnd.nextInt(DENSITY.length)];
    long maxTokens = Math.max(1, 40_000 / ((long) h * k));
    long n = rnd.nextInt(6) == 0 ? 0 : 1 + rnd.nextLong(Math.min(64, maxTokens));
    PermuteOptions options = randomOptions(rnd, e);
    try (RandomBatch b = RandomBatch.create(rnd, n, h, k, e, dtype, density)) {
      checkAgainstOracle(b, options, rnd.nextBoolean(), rnd);
    }
  }

  @Test
  void allMinusOneAndEmptyRanks() {
    SplittableRandom rnd = Seeds.fresh("allMinusOneAndEmptyRanks");
    try (RandomBatch b = RandomBatch.create(rnd, 9, 5, 3, 8, DType.BF16, 1.0)) {
      checkAgainstOracle(b, PermuteOptions.of(8), true, rnd);
      checkAgainstOracle(
          b, PermuteOptions.of(8).withCapacity(CapacityPolicy.perExpert(2, true)), true, rnd);
    }
    // rank 3 of 4 owns experts 6 and 7, which nobody routes to
    try (RandomBatch b = RandomBatch.create(rnd, 20, 4, 2, 6, DType.F16, 0.2)) {
      PermuteOptions rank3 =
          new PermuteOptions(8, ExpertPlacement.contiguous(8, 4), 3, CapacityPolicy.NONE, 4);
      checkAgainstOracle(b, rank3, true, rnd);
    }
  }

  @Test
  void everyCapacityModeOnOneBatch() {
    SplittableRandom rnd = Seeds.fresh("everyCapacityModeOnOneBatch");
    try (RandomBatch b = RandomBatch.create(rnd, 50, 7, 4, 7, DType.F32, 0.3)) {
      PermuteOptions base = PermuteOptions.of(7);
      for (CapacityPolicy c :
          List.of(
              CapacityPolicy.NONE,
              CapacityPolicy.numOut(0),
              CapacityPolicy.numOut(17),
              CapacityPolicy.numOut(1000),
              CapacityPolicy.perExpert(0, false),
              CapacityPolicy.perExpert(3, false),
              CapacityPolicy.perExpert(3, true),
              CapacityPolicy.perExpert(100, true))) {
        checkAgainstOracle(b, base.withCapacity(c), true, rnd);
        if (!(c instanceof CapacityPolicy.NumOut)) {
          checkAgainstOracle(b, base.withCapacity(c).withAlign(8), true, rnd);
        }
      }
    }
  }

  static PermuteOptions randomOptions(SplittableRandom rnd, int e) {
    ExpertPlacement placement = null;
    int rank = -1;
    if (rnd.nextBoolean()) {
      int[] divisors =
          java.util.stream.IntStream.rangeClosed(1, e).filter(r -> e % r == 0).toArray();
      int r = divisors[rnd.nextInt(divisors.length)];
      placement = ExpertPlacement.contiguous(e, r);
      rank = rnd.nextInt(r);
    }
    CapacityPolicy cap =
        switch (rnd.nextInt(4)) {
          case 0 -> CapacityPolicy.NONE;
          case 1 -> CapacityPolicy.numOut(rnd.nextInt(200));
          case 2 -> CapacityPolicy.perExpert(rnd.nextInt(10), false);
          default -> CapacityPolicy.perExpert(rnd.nextInt(10), true);
        };
    int align = cap instanceof CapacityPolicy.NumOut || rnd.nextBoolean() ? 1 : 1 + rnd.nextInt(16);
    return new PermuteOptions(e, placement, rank, cap, align);
  }

  static void checkAgainstOracle(
      RandomBatch b, PermuteOptions options, boolean withProbs, SplittableRandom rnd) {
    OracleCheck.check(CPU, b, options, withProbs, rnd);
  }
}
