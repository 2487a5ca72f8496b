package io.moeprep.kernels.testing;

import org.junit.jupiter.api.Assumptions;

/**
 * The rule for tests tagged {@code gpu}: skipped with the reason where no GPU can run them, failed
 * instead when {@code -Dmoeprep.requireGpu=true}.
 */
public final class GpuTests {
  private GpuTests() {}

  /** Skips or fails the calling test when {@code available} is false. */
  public static void require(boolean available, String reason) {
    if (available) {
      return;
    }
    if (Boolean.getBoolean("moeprep.requireGpu")) {
      throw new AssertionError("the GPU is required (moeprep.requireGpu=true) but: " + reason);
    }
    Assumptions.assumeTrue(false, "skipped, no GPU: " + reason);
  }
}
