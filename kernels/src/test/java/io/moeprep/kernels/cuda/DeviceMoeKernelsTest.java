package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.RandomBatch;
import io.moeprep.kernels.testing.Seeds;
import java.util.SplittableRandom;
import jcuda.driver.CUstream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The validated device-level entry: it refuses what the contract refuses (bad routing entries read
 * back from the device, misaligned or null addresses, mismatched rows, FP8 combines, row ids past
 * numOut) with the contract's messages, before any kernel runs; and its permute (fused maps, then
 * the rows) equals the CPU backend's byte for byte.
 */
@Tag("gpu")
class DeviceMoeKernelsTest extends GpuLeakCheck {
  private final MoeKernels cpu = MoeKernels.on(CpuBackend.INSTANCE);

  private static DeviceMoeKernels kernels() {
    return DeviceMoeKernels.on(
        ((CudaBackend) CudaSupport.backend()).device(), KernelTuning.DEFAULT);
  }

  @Test
  void aPermuteThroughTheEntryEqualsTheCpuBackends() {
    SplittableRandom rnd = Seeds.fresh("DeviceMoeKernelsTest.aPermuteThroughTheEntry");
    DeviceMoeKernels k = kernels();
    CudaDevice dev = k.device();
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    for (int c = 0; c < 12; c++) {
      long n = rnd.nextInt(2000);
      int h = 1 + rnd.nextInt(300);
      int kk = 1 + rnd.nextInt(8);
      int e = 1 + rnd.nextInt(300);
      int ranks = 1 + rnd.nextInt(Math.min(4, e));
      while (e % ranks != 0) { // contiguous placement: the ranks divide the experts
        ranks--;
      }
      PermuteOptions o = PermuteOptions.forRank(e, ranks, rnd.nextInt(ranks));
      if (c % 3 == 1) {
        o = o.withCapacity(CapacityPolicy.perExpert(rnd.nextInt(40), true)).withAlign(4);
      }
      long slots = n * kk;
      long rowBytes = 2L * h;
      try (RandomBatch b = RandomBatch.create(rnd, n, h, kk, e, DType.BF16, 0.2);
          PermuteResult want = cpu.permute(b.input(true), o);
          DeviceBuffer tokens = DeviceBuffer.allocate(dev, n * rowBytes);
          DeviceBuffer routing = DeviceBuffer.allocate(dev, slots * 4);
          DeviceBuffer probs = DeviceBuffer.allocate(dev, slots * 4);
          DeviceBuffer rowId = DeviceBuffer.allocate(dev, slots * 4)) {
        k.copies().copyToDevice(tokens.address(), b.tokens.address(), n * rowBytes, s);
        k.copies().copyToDevice(routing.address(), b.routing.address(), slots * 4, s);
        k.copies().copyToDevice(probs.address(), b.probs.address(), slots * 4, s);
        try (RoutingMapLauncher.DeviceMaps m =
            k.map(
                new DeviceRouting(routing.address(), probs.address(), n, kk),
                o,
                rowId.address(),
                s)) {
          long numOut = m.numOut();
          assertEquals(want.numOut(), numOut, "numOut, case " + c);
          try (DeviceBuffer permuted = DeviceBuffer.allocate(dev, numOut * rowBytes);
              HostBuffer got = HostBuffer.allocate(numOut * rowBytes);
              HostBuffer gotRow = HostBuffer.allocate(slots * 4);
              HostBuffer gotSrc = HostBuffer.allocate(numOut * 8)) {
            k.permuteRows(
                new PermuteLauncher.Rows(
                    new DeviceRows(tokens.address(), n, h, DType.BF16),
                    kk,
                    rowId.address(),
                    m.srcToken(),
                    new DeviceRows(permuted.address(), numOut, h, DType.BF16),
                    m.hasPadding()),
                s);
            k.copies().copyToHost(got.address(), permuted.address(), numOut * rowBytes, s);
            k.copies().copyToHost(gotRow.address(), rowId.address(), slots * 4, s);
            k.copies().copyToHost(gotSrc.address(), m.srcToken(), numOut * 8, s);
            dev.synchronize(s);
            CudaBackendTest.assertBytes(want.permuted(), got, "permuted, case " + c);
            CudaBackendTest.assertBytes(want.rowIdMap(), gotRow, "row map, case " + c);
            CudaBackendTest.assertBytes(want.sourceToken(), gotSrc, "sources, case " + c);
          }
        }
      }
    }
  }

  @Test
  void itRefusesWhatTheContractRefuses() {
    DeviceMoeKernels k = kernels();
    CudaDevice dev = k.device();
    CUstream s = CudaDevice.PER_THREAD_STREAM;
    long n = 5;
    int kk = 2;
    try (HostBuffer ids = HostBuffer.allocate(n * kk * 4);
        DeviceBuffer routing = DeviceBuffer.allocate(dev, n * kk * 4);
        DeviceBuffer rowId = DeviceBuffer.allocate(dev, n * kk * 4);
        DeviceBuffer rows = DeviceBuffer.allocate(dev, 64 * 8)) {
      for (int i = 0; i < n * kk; i++) {
        ids.putInt(4L * i, i % 4);
      }
      ids.putInt(4L * 7, 300); // token 3, slot 1
      k.copies().copyToDevice(routing.address(), ids.address(), n * kk * 4, s);
      PermuteOptions o = PermuteOptions.of(8);
      IllegalArgumentException bad =
          assertThrows(
              IllegalArgumentException.class,
              () -> k.map(new DeviceRouting(routing.address(), 0, n, kk), o, rowId.address(), s));
      assertEquals("routing[t=3][k=1] = 300 is out of range [0, 8) or -1", bad.getMessage());
      IllegalArgumentException misaligned =
          assertThrows(
              IllegalArgumentException.class,
              () ->
                  k.map(new DeviceRouting(routing.address() + 2, 0, n, kk), o, rowId.address(), s));
      assertTrue(
          misaligned.getMessage().contains("must be aligned to 4 bytes"), misaligned.getMessage());
      assertThrows(
          IllegalArgumentException.class,
          () -> k.map(new DeviceRouting(routing.address(), 0, n, kk), o, 0, s),
          "a null row map");
      assertThrows(
          IllegalArgumentException.class,
          () -> k.map(new DeviceRouting(routing.address(), 0, -1, kk), o, rowId.address(), s),
          "numTokens = -1");
      IllegalArgumentException mismatched =
          assertThrows(
              IllegalArgumentException.class,
              () ->
                  k.permuteRows(
                      new PermuteLauncher.Rows(
                          new DeviceRows(rows.address(), 1, 8, DType.BF16),
                          1,
                          rowId.address(),
                          0,
                          new DeviceRows(rows.address(), 1, 8, DType.F32),
                          false),
                      s));
      assertTrue(mismatched.getMessage().contains("must match tokens"), mismatched.getMessage());
      assertThrows(
          IllegalArgumentException.class,
          () ->
              k.unpermute(
                  new UnpermuteLauncher.Combine(
                      new DeviceRows(rows.address(), 1, 8, DType.FP8_E4M3),
                      rowId.address(),
                      0,
                      1,
                      new DeviceRows(rows.address(), 1, 8, DType.FP8_E4M3)),
                  s),
          "FP8 cannot be combined");
      // row ids 0..3 against numOut 2: the row map names row 2 at t=1, k=0
      IllegalArgumentException pastNumOut =
          assertThrows(
              IllegalArgumentException.class,
              () ->
                  k.unpermute(
                      new UnpermuteLauncher.Combine(
                          new DeviceRows(rows.address(), 2, 8, DType.BF16),
                          routing.address(),
                          0,
                          kk,
                          new DeviceRows(rows.address(), 2, 8, DType.BF16)),
                      s));
      assertEquals("rowIdMap[t=1][k=0] = 2 is out of range [0, 2) or -1", pastNumOut.getMessage());
    }
  }
}
