package io.moeprep.app.job;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The options of one subcommand, {@code --name value}, {@code --name=value} or a flag {@code
 * --name}. Every getter checks its value and fails with a message that names the option, the
 * constraint and the value given.
 */
final class Args {
  private final String command;
  private final Map<String, String> values = new LinkedHashMap<>();
  private boolean help;

  private Args(String command) {
    this.command = command;
  }

  /**
   * Parses {@code argv[from..]}.
   *
   * @param valueOptions options that take a value, without the leading {@code --}
   * @param flagOptions options that take none
   * @throws IllegalArgumentException on an unknown option or a missing value
   */
  static Args parse(
      String command, String[] argv, int from, Set<String> valueOptions, Set<String> flagOptions) {
    Args a = new Args(command);
    for (int i = from; i < argv.length; i++) {
      String arg = argv[i];
      if (arg.equals("--help") || arg.equals("-h")) {
        a.help = true;
        continue;
      }
      if (!arg.startsWith("--") || arg.length() == 2) {
        throw new IllegalArgumentException(
            "argument '" + arg + "' is unexpected: options start with -- (see --help)");
      }
      String name = arg.substring(2);
      String value = null;
      int eq = name.indexOf('=');
      if (eq >= 0) {
        value = name.substring(eq + 1);
        name = name.substring(0, eq);
      }
      if (flagOptions.contains(name)) {
        if (value != null) {
          throw new IllegalArgumentException("option --" + name + " takes no value");
        }
        a.values.put(name, "true");
      } else if (valueOptions.contains(name)) {
        if (value == null) {
          if (i + 1 >= argv.length || argv[i + 1].startsWith("--")) {
            throw new IllegalArgumentException("option --" + name + " needs a value");
          }
          value = argv[++i];
        }
        a.values.put(name, value);
      } else {
        throw new IllegalArgumentException(
            "option --"
                + name
                + " is unknown to '"
                + command
                + "': valid options are --"
                + String.join(", --", sorted(valueOptions, flagOptions)));
      }
    }
    return a;
  }

  private static List<String> sorted(Set<String> a, Set<String> b) {
    return java.util.stream.Stream.concat(a.stream(), b.stream()).sorted().toList();
  }

  boolean help() {
    return help;
  }

  boolean has(String name) {
    return values.containsKey(name);
  }

  boolean flag(String name) {
    return values.containsKey(name);
  }

  String str(String name, String def) {
    return values.getOrDefault(name, def);
  }

  String required(String name, String what) {
    String v = values.get(name);
    if (v == null || v.isBlank()) {
      throw new IllegalArgumentException(
          "option --" + name + " is missing: give --" + name + " " + what);
    }
    return v;
  }

  int integer(String name, int def, int min, int max) {
    String v = values.get(name);
    if (v == null) {
      return def;
    }
    long x = parseLong(name, v, min, max);
    return (int) x;
  }

  long longValue(String name, long def, long min, long max) {
    String v = values.get(name);
    return v == null ? def : parseLong(name, v, min, max);
  }

  double real(String name, double def, double min, double max) {
    String v = values.get(name);
    if (v == null) {
      return def;
    }
    double x;
    try {
      x = Double.parseDouble(v.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "--" + name + " '" + v + "' is invalid: must be a number in [" + min + ", " + max + "]");
    }
    if (!(x >= min && x <= max)) {
      throw new IllegalArgumentException(
          "--" + name + " " + v + " is invalid: must be in [" + min + ", " + max + "]");
    }
    return x;
  }

  /** A value among {@code choices} (lower case), ignoring case. */
  String choice(String name, String def, String... choices) {
    String v = values.get(name);
    if (v == null) {
      return def;
    }
    String l = v.trim().toLowerCase(java.util.Locale.ROOT);
    for (String c : choices) {
      if (c.equals(l)) {
        return c;
      }
    }
    throw new IllegalArgumentException(
        "--" + name + " '" + v + "' is invalid: must be one of " + String.join(", ", choices));
  }

  private static long parseLong(String name, String v, long min, long max) {
    long x;
    try {
      x = Long.parseLong(v.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "--"
              + name
              + " '"
              + v
              + "' is invalid: must be an integer in ["
              + min
              + ", "
              + max
              + "]");
    }
    if (x < min || x > max) {
      throw new IllegalArgumentException(
          "--" + name + " " + x + " is invalid: must be in [" + min + ", " + max + "]");
    }
    return x;
  }

  /** The options given, for the manifest. */
  Map<String, String> asMap() {
    return new LinkedHashMap<>(values);
  }
}
