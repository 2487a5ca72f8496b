package io.moeprep.spark.conf;

import java.util.function.Function;
import java.util.function.Predicate;

/**
 * One typed {@code spark.moeprep.*} setting: its key, documentation, default, parser and check. An
 * invalid value fails with {@code '0' in spark.moeprep.tokensPerBatch is invalid: must be in [1,
 * 2147483647]}.
 *
 * @param <T> the value type
 */
public final class ConfigEntry<T> {
  private final String key;
  private final String doc;
  private final T defaultValue;
  private final Function<String, T> parser;
  private final Predicate<T> check;
  private final String constraint;
  private final boolean userFacing;

  ConfigEntry(
      String key,
      String doc,
      T defaultValue,
      Function<String, T> parser,
      Predicate<T> check,
      String constraint,
      boolean userFacing) {
    this.key = key;
    this.doc = doc;
    this.defaultValue = defaultValue;
    this.parser = parser;
    this.check = check;
    this.constraint = constraint;
    this.userFacing = userFacing;
  }

  /** The full key, {@code spark.moeprep.*}. */
  public String key() {
    return key;
  }

  /** What the setting does, in one or two sentences. */
  public String doc() {
    return doc;
  }

  /** The value used when the key is unset. */
  public T defaultValue() {
    return defaultValue;
  }

  /** The accepted values, in words ({@code must be in [1, 1024]}). */
  public String constraint() {
    return constraint;
  }

  /** True for the keys listed in {@code conf/spark-defaults.conf.template}. */
  public boolean userFacing() {
    return userFacing;
  }

  /**
   * True for the keys under {@value MoePrepConf#INTERNAL}: kernel tuning for benchmarks and tests,
   * documented apart and subject to change.
   */
  public boolean internal() {
    return key.startsWith(MoePrepConf.INTERNAL);
  }

  /**
   * Parses and checks a raw value; {@code null} gives the default.
   *
   * @throws IllegalArgumentException naming the value, the key and the constraint
   */
  public T parse(String raw) {
    if (raw == null) {
      return defaultValue;
    }
    T v;
    try {
      v = parser.apply(raw.trim());
    } catch (RuntimeException e) {
      throw new IllegalArgumentException(invalid(raw), e);
    }
    if (!check.test(v)) {
      throw new IllegalArgumentException(invalid(raw));
    }
    return v;
  }

  /** The value of this entry in a configuration, looked up by key ({@code null} = unset). */
  public T readFrom(Function<String, String> lookup) {
    return parse(lookup.apply(key));
  }

  /**
   * The raw value of this entry in a configuration as it would be read: the value set, or the
   * default written as a setting.
   */
  public String rawFrom(Function<String, String> lookup) {
    String raw = lookup.apply(key);
    return raw != null ? raw : String.valueOf(defaultValue);
  }

  private String invalid(String raw) {
    return "'" + raw + "' in " + key + " is invalid: " + constraint;
  }

  @Override
  public String toString() {
    return key + "=" + defaultValue;
  }
}
