package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.cpu.CpuBackend;
import io.moeprep.kernels.cuda.CudaSupport;
import org.junit.jupiter.api.Test;

/** The choice of a backend, and the one place where auto falls back to the CPU with its reason. */
class BackendsTest {

  @Test
  void cpuIsTheCpuBackend() {
    Backends.Selection s = Backends.choose(BackendChoice.CPU, 3);
    assertSame(CpuBackend.INSTANCE, s.backend());
    assertFalse(s.fellBack());
    assertNull(s.fallbackReason());
  }

  @Test
  void autoRunsOnTheGpuOrSaysWhyNot() {
    CudaSupport.Probe probe = CudaSupport.probe();
    Backends.Selection s = Backends.choose(BackendChoice.AUTO, -1);
    if (probe.available()) {
      assertEquals("cuda", s.backend().name());
      assertFalse(s.fellBack());
    } else {
      assertSame(CpuBackend.INSTANCE, s.backend());
      assertEquals(probe.reason(), s.fallbackReason());
      IllegalStateException e =
          assertThrows(IllegalStateException.class, () -> Backends.choose(BackendChoice.CUDA, 0));
      assertTrue(e.getMessage().contains(probe.reason()), e.getMessage());
    }
    assertSame(s.backend().getClass(), Backends.select(BackendChoice.AUTO).getClass());
  }

  @Test
  void aBackendWithoutADeviceIgnoresAMemoryLimitButChecksIt() {
    CpuBackend.INSTANCE.limitDeviceMemory(0);
    CpuBackend.INSTANCE.limitDeviceMemory(1 << 20);
    assertThrows(IllegalArgumentException.class, () -> CpuBackend.INSTANCE.limitDeviceMemory(-1));
  }
}
