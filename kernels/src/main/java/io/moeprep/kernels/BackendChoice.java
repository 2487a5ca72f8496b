package io.moeprep.kernels;

import java.util.Locale;

/** Which backend runs the kernels. */
public enum BackendChoice {
  /** The GPU when a driver, a device and the fatbin are present, else the CPU (saying why once). */
  AUTO,
  /** The multi-threaded Java backend. */
  CPU,
  /** The CUDA backend; fails with the reason when it cannot run. */
  CUDA;

  /** Parses {@code auto | cpu | cuda}, ignoring case. */
  public static BackendChoice parse(String s) {
    try {
      return valueOf(s.trim().toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          "backend '" + s + "' is invalid: must be one of auto, cpu, cuda", e);
    }
  }
}
