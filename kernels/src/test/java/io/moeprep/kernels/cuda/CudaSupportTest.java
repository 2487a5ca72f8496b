package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The parts of the CUDA backend that run anywhere: the probe's contract and launch geometry. */
class CudaSupportTest {

  @Test
  void probeGivesAReasonOrABackend() {
    CudaSupport.Probe p = CudaSupport.probe();
    assertFalse(p.reason().isBlank(), "the probe always says why");
    assertTrue(p == CudaSupport.probe(), "the probe runs once per process");
    if (p.available()) {
      assertEquals("cuda", CudaSupport.backend().name());
    } else {
      IllegalStateException e = assertThrows(IllegalStateException.class, CudaSupport::backend);
      assertTrue(e.getMessage().contains(p.reason()), e.getMessage());
    }
  }

  @Test
  void linkErrorsAreShortened() {
    String jcuda =
        "Error while loading native library \"JCudaDriver-12.6.0-linux-x86_64\"\n"
            + "Stack trace from the attempt to load the library as a resource:\n"
            + "java.lang.UnsatisfiedLinkError: /tmp/libJCudaDriver.so: libcuda.so.1: cannot open"
            + " shared object file: No such file or directory\n"
            + "\tat java.base/jdk.internal.loader.NativeLibraries.load(Native Method)\n";
    assertEquals(
        "UnsatisfiedLinkError: Error while loading native library \"JCudaDriver-12.6.0-linux-x86_64\""
            + " (/tmp/libJCudaDriver.so: libcuda.so.1: cannot open shared object file: No such file"
            + " or directory)",
        CudaSupport.briefly(new UnsatisfiedLinkError(jcuda)));
    assertEquals(
        "NoClassDefFoundError: jcuda/driver/JCudaDriver",
        CudaSupport.briefly(new NoClassDefFoundError("jcuda/driver/JCudaDriver")));
  }

  @Test
  void unitsAreTheWidestAlignedAccess() {
    assertEquals(16, LaunchGeometry.unitBytes(14336, 1, 0x1000, 0x2000));
    assertEquals(2, LaunchGeometry.unitBytes(14, 1, 0x1000, 0x2000)); // H = 7 bf16
    assertEquals(1, LaunchGeometry.unitBytes(3, 1, 0x1000)); // H = 3 fp8
    assertEquals(8, LaunchGeometry.unitBytes(32, 1, 0x1008, 0x2000)); // an address 8-aligned
    assertEquals(4, LaunchGeometry.unitBytes(4, 4, 0x1000)); // H = 1 f32
    assertThrows(IllegalArgumentException.class, () -> LaunchGeometry.unitBytes(8, 4, 0x1002));
  }

  @Test
  void lanesArePowersOfTwoUpToABlock() {
    assertEquals(1, LaunchGeometry.lanes(1, 8));
    assertEquals(128, LaunchGeometry.lanes(896, 8)); // H = 7168 bf16, 16-byte units
    assertEquals(256, LaunchGeometry.lanes(896, 2));
    assertEquals(256, LaunchGeometry.lanes(1L << 40, 4));
  }
}
