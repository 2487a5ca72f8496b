package io.moeprep.app.cli;

import java.util.Locale;

/**
 * Checks of option values beyond what their picocli types express, shared by both command lines.
 * Each fails with an {@link IllegalArgumentException} (exit code 2) that names the option, the
 * value and the constraint: {@code --width 10 is invalid: must be in [200, 20000]}.
 */
public final class OptionChecks {
  private OptionChecks() {}

  /** {@code value} of {@code option}, checked to lie in {@code [min, max]}. */
  public static long inRange(String option, long value, long min, long max) {
    if (value < min || value > max) {
      throw new IllegalArgumentException(
          option + " " + value + " is invalid: must be in [" + min + ", " + max + "]");
    }
    return value;
  }

  /** {@code value} of {@code option}, checked to lie in {@code [min, max]}. */
  public static int inRange(String option, int value, int min, int max) {
    return (int) inRange(option, (long) value, min, max);
  }

  /** {@code value} of {@code option}, checked to lie in {@code [min, max]} (NaN never does). */
  public static double inRange(String option, double value, double min, double max) {
    if (!(value >= min && value <= max)) {
      throw new IllegalArgumentException(
          option + " " + value + " is invalid: must be in [" + min + ", " + max + "]");
    }
    return value;
  }

  /** {@code value} of {@code option} in lower case, checked to be one of {@code choices}. */
  public static String oneOf(String option, String value, String... choices) {
    String v = value.trim().toLowerCase(Locale.ROOT);
    for (String c : choices) {
      if (c.equals(v)) {
        return c;
      }
    }
    throw new IllegalArgumentException(
        option + " '" + value + "' is invalid: must be one of " + String.join(", ", choices));
  }
}
