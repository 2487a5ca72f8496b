package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.GpuTests;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/**
 * Base of the GPU tests: skips (or fails, with {@code -Dmoeprep.requireGpu=true}) where CUDA cannot
 * run, and checks that each test gives back all the device and host memory it took.
 */
abstract class GpuLeakCheck {
  private long deviceBytes;
  private long deviceBuffers;
  private long hostBytes;
  private long pinnedBytes;

  @BeforeEach
  void requireGpuAndRecordMemory() {
    CudaSupport.Probe p = CudaSupport.probe();
    GpuTests.require(p.available(), p.reason());
    deviceBytes = DeviceBuffer.bytesInUse();
    deviceBuffers = DeviceBuffer.liveBuffers();
    hostBytes = HostBuffer.bytesInUse();
    pinnedBytes = PinnedBuffer.bytesInUse();
  }

  @AfterEach
  void memoryBackToStart() {
    if (!CudaSupport.probe().available()) {
      return;
    }
    assertEquals(deviceBytes, DeviceBuffer.bytesInUse(), "device bytes in use after the test");
    assertEquals(deviceBuffers, DeviceBuffer.liveBuffers(), "live device buffers after the test");
    assertEquals(hostBytes, HostBuffer.bytesInUse(), "host bytes in use after the test");
    assertEquals(pinnedBytes, PinnedBuffer.bytesInUse(), "pinned bytes in use after the test");
  }
}
