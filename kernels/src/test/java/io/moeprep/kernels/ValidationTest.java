package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ChunkSortInput;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.RoutingMaps;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.HostBuffers;
import io.moeprep.kernels.testing.LeakCheck;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.function.Executable;

/**
 * Every bad input of the contract fails before any work, with a message naming the argument, the
 * constraint, the value and where it is; and nothing is allocated by a failed call.
 */
@ExtendWith(LeakCheck.class)
class ValidationTest {
  private static final MoeKernels CPU = MoeKernels.on(CpuBackend.INSTANCE);

  private static void fails(String message, Executable call) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
    assertEquals(message, e.getMessage());
  }

  private static PermuteInput input(HostBuffer tokens, HostBuffer ids, long n, int k) {
    return new PermuteInput(tokens, n, 4, DType.F32, ids, k, null);
  }

  @Test
  void expertIdOutOfRangeNamesTokenSlotValueAndE() {
    try (HostBuffer tokens = HostBuffer.allocateZeroed(3 * 16);
        HostBuffer ids = HostBuffers.ints(new int[][] {{0, 1}, {2, 3}, {1, 300}})) {
      fails(
          "routing[t=2][k=1] = 300 is out of range [0, 256) or -1",
          () -> CPU.permute(input(tokens, ids, 3, 2), PermuteOptions.of(256)));
      ids.putInt(4, -2);
      fails(
          "routing[t=0][k=1] = -2 is out of range [0, 256) or -1",
          () -> CPU.permute(input(tokens, ids, 3, 2), PermuteOptions.of(256)));
      fails(
          "routing[t=0][k=1] = -2 is out of range [0, 4) or -1",
          () -> CPU.permute(input(tokens, ids, 3, 2), PermuteOptions.of(4)));
    }
  }

  @Test
  void int64RoutingIsCheckedBeforeNarrowing() {
    try (HostBuffer ids64 = HostBuffer.allocateZeroed(4 * 8)) {
      ids64.putLong(24, 1L << 33);
      fails(
          "routing[t=1][k=1] = 8589934592 is out of range [0, 8) or -1",
          () -> RoutingMaps.narrowInt64(ids64, 2, 2, 8));
      ids64.putLong(24, 7);
      try (HostBuffer ids = RoutingMaps.narrowInt64(ids64, 2, 2, 8)) {
        assertEquals(7, ids.getInt(12));
      }
    }
  }

  @Test
  void placementErrors() {
    fails(
        "numExperts = 6 is not a multiple of epSize = 4: give an explicit expert-to-rank placement",
        () -> ExpertPlacement.contiguous(6, 4));
    fails("epSize = 0 is invalid: must be >= 1", () -> ExpertPlacement.contiguous(6, 0));
    fails(
        "placement[expert=2] = 5 is out of range [0, 2)",
        () -> ExpertPlacement.explicit(new int[] {0, 1, 5}, 2));
    fails("rank = 2 is out of range [0, 2)", () -> PermuteOptions.forRank(4, 2, 2));
    fails("rank = -3 is out of range [0, 2)", () -> PermuteOptions.forRank(4, 2, -3));
    fails(
        "placement has 4 experts but numExperts = 8: they must be equal",
        () -> new PermuteOptions(8, ExpertPlacement.contiguous(4, 2), 0, CapacityPolicy.NONE, 1));
    fails("numExperts = 0 is invalid: must be >= 1", () -> PermuteOptions.of(0));
  }

  @Test
  void capacityAndAlignmentErrors() {
    fails(
        "capacity = -1 is invalid: must be in [0, 2^31-1]",
        () -> CapacityPolicy.perExpert(-1, false));
    fails("numOut = -5 is invalid: must be in [0, 2^31-1]", () -> CapacityPolicy.numOut(-5));
    fails(
        "numOut = 2147483648 is invalid: must be in [0, 2^31-1]",
        () -> CapacityPolicy.numOut(1L << 31));
    fails("align = 0 is invalid: must be >= 1", () -> PermuteOptions.of(4).withAlign(0));
    fails(
        "align = 8 cannot be combined with numOut: choose one of them",
        () -> PermuteOptions.of(4).withCapacity(CapacityPolicy.numOut(3)).withAlign(8));
  }

  @Test
  void outputOfTwoToThe31RowsIsRefusedBeforeAllocating() {
    try (HostBuffer tokens = HostBuffer.allocateZeroed(16);
        HostBuffer ids = HostBuffers.ints(new int[][] {{0, 1}})) {
      PermuteOptions huge =
          PermuteOptions.of(2).withCapacity(CapacityPolicy.perExpert(Integer.MAX_VALUE, true));
      fails(
          "output rows = 4294967294 is invalid: must be < 2^31 (row ids are int32); lower the"
              + " capacity or split the batch",
          () -> CPU.permute(input(tokens, ids, 1, 2), huge));
    }
  }

  @Test
  void shapeAndBufferErrors() {
    try (HostBuffer tokens = HostBuffer.allocateZeroed(2 * 16);
        HostBuffer ids = HostBuffers.ints(new int[][] {{0}, {1}})) {
      fails(
          "numTokens = -1 is invalid: must be >= 0",
          () -> CPU.permute(input(tokens, ids, -1, 1), PermuteOptions.of(2)));
      fails(
          "topK = 0 is invalid: must be >= 1",
          () -> CPU.permute(input(tokens, ids, 2, 0), PermuteOptions.of(2)));
      fails(
          "hidden = 0 is invalid: must be >= 1",
          () ->
              CPU.permute(
                  new PermuteInput(tokens, 2, 0, DType.F32, ids, 1, null), PermuteOptions.of(2)));
      fails(
          "tokens holds 32 bytes: the shape needs 48",
          () -> CPU.permute(input(tokens, ids, 3, 1), PermuteOptions.of(2)));
      fails(
          "routing holds 8 bytes: the shape needs 16",
          () -> CPU.permute(input(tokens, ids, 2, 2), PermuteOptions.of(2)));
      fails(
          "probs holds 4 bytes: the shape needs 8",
          () -> {
            try (HostBuffer p = HostBuffer.allocateZeroed(4)) {
              CPU.permute(
                  new PermuteInput(tokens, 2, 4, DType.F32, ids, 1, p), PermuteOptions.of(2));
            }
          });
      HostBuffer closed = HostBuffer.allocate(64);
      closed.close();
      fails(
          "tokens (" + closed + ") is closed",
          () -> CPU.permute(input(closed, ids, 2, 1), PermuteOptions.of(2)));
    }
  }

  @Test
  void unpermuteErrors() {
    try (HostBuffer out = HostBuffer.allocateZeroed(4 * 16);
        HostBuffer map = HostBuffers.ints(new int[][] {{0, 3}, {4, -1}})) {
      fails(
          "rowIdMap[t=1][k=0] = 4 is out of range [0, 4) or -1",
          () -> CPU.unpermute(new UnpermuteInput(out, 4, map, 2, 2, 4, DType.F32, null)));
      fails(
          "dtype = FP8_E4M3 cannot be combined: FP8 expert outputs need a scale, which unpermute"
              + " does not take; dequantize them to bf16 or f32 first",
          () -> CPU.unpermute(new UnpermuteInput(out, 4, map, 2, 2, 4, DType.FP8_E4M3, null)));
      fails(
          "expertOut holds 64 bytes: the shape needs 80",
          () -> CPU.unpermute(new UnpermuteInput(out, 5, map, 2, 2, 4, DType.F32, null)));
      fails(
          "numOut = 2147483648 is invalid: must be < 2^31 (row ids are int32)",
          () -> CPU.unpermute(new UnpermuteInput(out, 1L << 31, map, 2, 2, 4, DType.F32, null)));
    }
  }

  @Test
  void chunkSortErrors() {
    try (HostBuffer rows = HostBuffer.allocateZeroed(6 * 4)) {
      fails(
          "sortedIndex[1] = 0 appears twice: it must be a permutation",
          () -> chunkSort(rows, new long[] {2, 4}, new int[] {0, 0}));
      fails(
          "sortedIndex[0] = 2 is out of range [0, 2): it must be a permutation",
          () -> chunkSort(rows, new long[] {2, 4}, new int[] {2, 0}));
      fails(
          "sum(splitSizes) = 5 must equal the row count 6",
          () -> chunkSort(rows, new long[] {2, 3}, new int[] {1, 0}));
      fails(
          "splitSizes[0] = -1 is invalid: must be >= 0",
          () -> chunkSort(rows, new long[] {-1, 7}, new int[] {1, 0}));
      fails(
          "sortedIndex has 1 entries but splitSizes has 2: they must be equal",
          () -> chunkSort(rows, new long[] {2, 4}, new int[] {0}));
    }
  }

  private static void chunkSort(HostBuffer rows, long[] sizes, int[] order) {
    CPU.chunkSort(new ChunkSortInput(rows, 6, 1, DType.F32, sizes, order, null)).close();
  }

  @Test
  void namesOfDtypesAndBackends() {
    fails(
        "dtype 'int8' is invalid: must be one of f32, bf16, f16, fp8e4m3, fp8e5m2",
        () -> DType.parse("int8"));
    fails(
        "backend 'tpu' is invalid: must be one of auto, cpu, cuda",
        () -> BackendChoice.parse("tpu"));
    assertEquals(DType.FP8_E5M2, DType.parse("FP8_E5M2"));
    assertEquals(DType.BF16, DType.parse("bf16"));
  }
}
