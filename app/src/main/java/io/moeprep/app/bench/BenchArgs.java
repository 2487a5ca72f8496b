package io.moeprep.app.bench;

import java.util.LinkedHashMap;
import java.util.Map;

/** The {@code key=value} arguments of the Spark benchmarks, over their defaults. */
final class BenchArgs {
  private BenchArgs() {}

  /**
   * {@code defaults} with each {@code key=value} of {@code args} in place of its default.
   *
   * @throws IllegalArgumentException naming an argument that is not {@code key=value} with a known
   *     key, and the keys
   */
  static Map<String, String> parse(Map<String, String> defaults, String[] args) {
    Map<String, String> a = new LinkedHashMap<>(defaults);
    for (String arg : args) {
      String[] kv = arg.split("=", 2);
      if (kv.length != 2 || !a.containsKey(kv[0])) {
        throw new IllegalArgumentException(
            "argument '" + arg + "' is invalid: must be key=value with a key of " + a.keySet());
      }
      a.put(kv[0], kv[1]);
    }
    return a;
  }
}
