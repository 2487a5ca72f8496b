package io.moeprep.kernels;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.OracleCheck;
import io.moeprep.kernels.testing.RandomBatch;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.ShrinkingMode;
import net.jqwik.api.lifecycle.AfterProperty;

/**
 * Property-based fuzzing of the CPU backend against the naive oracle (jqwik): shapes, dtypes,
 * routing maps (generated entry by entry, so a failure shrinks to a minimal map), explicit
 * placements and masking, capacities, padding and alignment. jqwik prints the seed of each run and
 * stores failing samples in {@code .jqwik-database} (git-ignored), replaying them first next time;
 * a shrunk failure is added below as an {@code @Example}, so it stays a regression test.
 *
 * <p>The number of tries ({@code jqwik.tries.default} in {@code junit-platform.properties}, 400)
 * bounds its time in CI to about 20 seconds.
 */
class ContractFuzzTest {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);
  private static final DType[] DTYPES = DType.values();

  /** One generated case. */
  record Case(
      int n,
      int k,
      int e,
      int h,
      DType dtype,
      List<Integer> routing,
      List<Integer> rankOfExpert,
      int ranks,
      int rank,
      int capMode,
      int capValue,
      int align,
      boolean probs,
      long dataSeed) {

    PermuteOptions options() {
      ExpertPlacement placement =
          rank < 0
              ? null
              : ExpertPlacement.explicit(
                  rankOfExpert.stream().mapToInt(Integer::intValue).toArray(), ranks);
      CapacityPolicy cap =
          switch (capMode) {
            case 0 -> CapacityPolicy.NONE;
            case 1 -> CapacityPolicy.numOut(capValue);
            case 2 -> CapacityPolicy.perExpert(capValue, false);
            default -> CapacityPolicy.perExpert(capValue, true);
          };
      return new PermuteOptions(e, placement, rank, cap, capMode == 1 ? 1 : align);
    }
  }

  @Property(shrinking = ShrinkingMode.FULL)
  void cpuBackendMatchesTheOracle(@ForAll("cases") Case c) {
    run(c);
  }

  /** Every -1 slot of a token before its valid slot: the shape of the reference library's bug. */
  @Example
  void regressionMinusOneBeforeValidSlot() {
    run(
        new Case(
            3,
            2,
            4,
            1,
            DType.BF16,
            List.of(-1, 1, -1, -1, -1, 0),
            List.of(0, 0, 1, 1),
            2,
            0,
            0,
            0,
            1,
            true,
            1));
  }

  static void run(Case c) {
    SplittableRandom rnd = new SplittableRandom(c.dataSeed());
    try (RandomBatch b = RandomBatch.create(rnd, c.n(), c.h(), c.k(), c.e(), c.dtype(), 0)) {
      for (int s = 0; s < c.routing().size(); s++) {
        b.routing.putInt(4L * s, c.routing().get(s));
      }
      OracleCheck.check(CPU, b, c.options(), c.probs(), rnd);
    }
  }

  @AfterProperty
  void noLeaks() {
    if (HostBuffer.liveBuffers() != 0) {
      throw new AssertionError("host buffers leaked: " + HostBuffer.liveBuffers());
    }
  }

  private record Shape(int n, int k, int e, int h, DType dtype) {}

  @Provide
  Arbitrary<Case> cases() {
    Arbitrary<Integer> n = Arbitraries.integers().between(0, 24);
    Arbitrary<Integer> k =
        Arbitraries.oneOf(Arbitraries.integers().between(1, 6), Arbitraries.of(8, 129));
    Arbitrary<Integer> e =
        Arbitraries.oneOf(Arbitraries.integers().between(1, 12), Arbitraries.of(256));
    Arbitrary<Integer> h =
        Arbitraries.oneOf(Arbitraries.integers().between(1, 12), Arbitraries.of(100, 4097));
    return Combinators.combine(n, k, e, h, Arbitraries.of(DTYPES))
        .as(
            (nn, kk, ee, hh, d) ->
                new Shape(Math.min(nn, Math.max(1, 40_000 / (kk * hh))), kk, ee, hh, d))
        .flatMap(this::casesOf);
  }

  private Arbitrary<Case> casesOf(Shape s) {
    Arbitrary<List<Integer>> routing =
        Arbitraries.of(0, 10, 50, 90, 100)
            .flatMap(
                pct ->
                    Arbitraries.frequencyOf(
                            net.jqwik.api.Tuple.of(
                                100 - pct, Arbitraries.integers().between(0, s.e() - 1)),
                            net.jqwik.api.Tuple.of(pct, Arbitraries.just(-1)))
                        .list()
                        .ofSize(s.n() * s.k()));
    return Arbitraries.integers()
        .between(1, 4)
        .flatMap(
            ranks ->
                Combinators.combine(
                        routing,
                        Arbitraries.integers().between(0, ranks - 1).list().ofSize(s.e()),
                        Arbitraries.integers().between(-1, ranks - 1),
                        Arbitraries.integers().between(0, 3),
                        Arbitraries.integers().between(0, 40),
                        Arbitraries.integers().between(1, 8),
                        Arbitraries.of(true, false),
                        Arbitraries.longs())
                    .as(
                        (ro, pl, rk, cm, cv, al, pr, sd) ->
                            new Case(
                                s.n(), s.k(), s.e(), s.h(), s.dtype(), ro, pl, ranks, rk, cm, cv,
                                al, pr, sd)));
  }
}
