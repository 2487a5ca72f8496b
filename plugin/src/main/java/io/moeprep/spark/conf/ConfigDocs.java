package io.moeprep.spark.conf;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Writes {@code docs/configs.md} and {@code conf/spark-defaults.conf.template} from {@link
 * MoePrepConf#ALL}; the build runs it, and {@code ConfigDocsTest} fails when the committed copies
 * are stale.
 */
public final class ConfigDocs {
  private ConfigDocs() {}

  /** Arguments: the path of configs.md, then the path of spark-defaults.conf.template. */
  public static void main(String[] args) throws IOException {
    write(Path.of(args[0]), markdown());
    write(Path.of(args[1]), defaultsTemplate());
  }

  private static void write(Path p, String text) throws IOException {
    Files.createDirectories(p.toAbsolutePath().getParent());
    Files.writeString(p, text, StandardCharsets.UTF_8);
  }

  /** The content of {@code docs/configs.md}. */
  public static String markdown() {
    StringBuilder b = new StringBuilder();
    b.append("# MoePrep configuration\n\n")
        .append("<!-- generated from io.moeprep.spark.conf.MoePrepConf by the build;")
        .append(" do not edit -->\n\n")
        .append("Set these like any Spark setting (`--conf`, `spark-defaults.conf`,")
        .append(" `spark.conf.set`). Options given in code (`PermuteSpec`) or as data source")
        .append(" options take precedence.\n\n");
    table(b, false);
    b.append("\n## Internal settings\n\n")
        .append("Kernel tuning for benchmarks and tests (`")
        .append(MoePrepConf.INTERNAL)
        .append(
            "*`), read like the settings above and carried with the job to where the backend is chosen.")
        .append(" They may change or go away without notice: leave them unset in production.\n\n");
    table(b, true);
    return b.toString();
  }

  /** The table of the internal entries, or of the others. */
  private static void table(StringBuilder b, boolean internal) {
    b.append("| key | default | accepted values | meaning |\n").append("|---|---|---|---|\n");
    for (ConfigEntry<?> e : MoePrepConf.ALL) {
      if (e.internal() != internal) {
        continue;
      }
      String def = String.valueOf(e.defaultValue());
      b.append("| `")
          .append(e.key())
          .append("` | ")
          .append(def.isEmpty() ? "(empty)" : "`" + def + "`")
          .append(" | ")
          .append(e.constraint())
          .append(" | ")
          .append(e.doc())
          .append(" |\n");
    }
  }

  /** The content of {@code conf/spark-defaults.conf.template}. */
  public static String defaultsTemplate() {
    StringBuilder b = new StringBuilder();
    b.append("# MoePrep settings for spark-defaults.conf (generated from MoePrepConf; do not")
        .append(" edit).\n")
        .append("# Load the plugin and its SQL helpers:\n")
        .append("# spark.plugins                  io.moeprep.spark.MoePrepPlugin\n")
        .append("# spark.sql.extensions           io.moeprep.spark.MoePrepExtensions\n")
        .append(
            "# Spark 4.1 on Java 17 also needs Spark's --add-opens list; spark-submit adds it.\n");
    for (ConfigEntry<?> e : MoePrepConf.ALL) {
      if (!e.userFacing()) {
        continue;
      }
      b.append("\n");
      for (String line : wrap(e.doc() + " (" + e.constraint() + ")", 96)) {
        b.append("# ").append(line).append('\n');
      }
      b.append("# ").append(e.key()).append("  ").append(e.defaultValue()).append('\n');
    }
    return b.toString();
  }

  private static java.util.List<String> wrap(String text, int width) {
    java.util.List<String> lines = new java.util.ArrayList<>();
    StringBuilder line = new StringBuilder();
    for (String w : text.split(" ")) {
      if (line.length() > 0 && line.length() + 1 + w.length() > width) {
        lines.add(line.toString());
        line.setLength(0);
      }
      if (line.length() > 0) {
        line.append(' ');
      }
      line.append(w);
    }
    if (line.length() > 0) {
      lines.add(line.toString());
    }
    return lines;
  }
}
