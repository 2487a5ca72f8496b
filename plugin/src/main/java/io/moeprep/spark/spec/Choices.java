package io.moeprep.spark.spec;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/** Parses the settings whose value is one of an enum's constants, written in lower case. */
final class Choices {
  private Choices() {}

  /**
   * The constant of {@code type} named {@code value} (ignoring case and surrounding blanks).
   *
   * @throws IllegalArgumentException {@code <setting> '<value>' is invalid: must be one of ...},
   *     listing the constants in declaration order
   */
  static <E extends Enum<E>> E parse(Class<E> type, String setting, String value) {
    try {
      return Enum.valueOf(type, value.trim().toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      String names =
          Arrays.stream(type.getEnumConstants())
              .map(c -> c.name().toLowerCase(Locale.ROOT))
              .collect(Collectors.joining(", "));
      throw new IllegalArgumentException(
          setting + " '" + value + "' is invalid: must be one of " + names, e);
    }
  }

  /** The name of {@code choice} as written in settings and options: lower case. */
  static String name(Enum<?> choice) {
    return choice.name().toLowerCase(Locale.ROOT);
  }
}
