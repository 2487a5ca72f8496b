package io.moeprep.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The plugin's packages form layers, and a package uses only its own layer and those below it. From
 * the bottom:
 *
 * <ol>
 *   <li>{@code conf}: the typed configuration;
 *   <li>{@code spec}: the spec (shape, settings, columns), its value types, the schemas and the
 *       dispatch wire format;
 *   <li>{@code exec}: the tasks on rows and the per-executor runtime;
 *   <li>{@code rapids}: the cudf route;
 *   <li>{@code api}: the public DataFrame API;
 *   <li>{@code sql}: the SQL functions and the data source;
 *   <li>{@code io.moeprep.spark} itself: the plugin entry classes, which use what they register.
 * </ol>
 *
 * <p>Read from the main sources: every reference to an {@code io.moeprep.spark} class outside
 * comments and strings (imports, static imports, qualified names) counts. A reference upward, a
 * package cycle, or a package without a layer fails the build.
 */
class LayeringTest {
  /** The layers, bottom first. */
  static final List<String> LAYERS =
      List.of(
          "io.moeprep.spark.conf",
          "io.moeprep.spark.spec",
          "io.moeprep.spark.sink",
          "io.moeprep.spark.exec",
          "io.moeprep.spark.rapids",
          "io.moeprep.spark.api",
          "io.moeprep.spark.sql",
          "io.moeprep.spark");

  private static final Pattern PACKAGE =
      Pattern.compile("^package\\s+([\\w.]+)\\s*;", Pattern.MULTILINE);

  /** {@code io.moeprep.spark[.lower.case.segments].(Class | *)}. */
  private static final Pattern REFERENCE =
      Pattern.compile("\\bio\\.moeprep\\.spark((?:\\.[a-z_][a-z0-9_]*)*)\\.(?:[A-Z]\\w*|\\*)");

  @Test
  void noPackageUsesOneAboveItAndThereIsNoCycle() throws IOException {
    Map<String, Set<String>> uses = dependencies();
    assertTrue(uses.size() >= LAYERS.size() - 1, "main sources found: " + uses.keySet());
    List<String> problems = new ArrayList<>();
    for (String p : uses.keySet()) {
      if (!LAYERS.contains(p)) {
        problems.add(p + " has no layer: add it to LayeringTest.LAYERS and docs/architecture.md");
      }
    }
    for (Map.Entry<String, Set<String>> e : uses.entrySet()) {
      for (String used : e.getValue()) {
        if (LAYERS.indexOf(used) > LAYERS.indexOf(e.getKey()) && LAYERS.contains(e.getKey())) {
          problems.add(e.getKey() + " uses " + used + ", a layer above it");
        }
      }
    }
    List<String> cycle = cycle(uses);
    if (!cycle.isEmpty()) {
      problems.add("package cycle: " + String.join(" -> ", cycle));
    }
    assertEquals(
        List.of(),
        problems,
        "layers, bottom first: " + LAYERS + "; a package may use only its layer and those below");
  }

  @Test
  void theReaderSeesEveryFormOfReference() {
    String src =
        "package io.moeprep.spark.exec;\n"
            + "import io.moeprep.spark.spec.PermuteSpec;\n"
            + "import static io.moeprep.spark.conf.MoePrepConf.BACKEND;\n"
            + "import io.moeprep.spark.sql.*;\n"
            + "// io.moeprep.spark.api.MoePrep in a comment\n"
            + "/* io.moeprep.spark.api.PermuteOutput */ class X {\n"
            + "  String s = \"io.moeprep.spark.api.RapidsPermute\";\n"
            + "  Object o = io.moeprep.spark.rapids.RapidsRoute.class;\n"
            + "  Object p = io.moeprep.spark.MoePrepPlugin.class;\n"
            + "}\n";
    assertEquals(
        Set.of(
            "io.moeprep.spark.spec",
            "io.moeprep.spark.conf",
            "io.moeprep.spark.sql",
            "io.moeprep.spark.rapids",
            "io.moeprep.spark"),
        referencedPackages(src));
  }

  /** Package to the other plugin packages its main sources reference. */
  private static Map<String, Set<String>> dependencies() throws IOException {
    Path root = Path.of(System.getProperty("user.dir"), "src", "main", "java");
    Map<String, Set<String>> uses = new TreeMap<>();
    try (Stream<Path> files = Files.walk(root.resolve("io/moeprep/spark"))) {
      for (Path f : files.filter(p -> p.toString().endsWith(".java")).toList()) {
        String src = Files.readString(f, StandardCharsets.UTF_8);
        Matcher m = PACKAGE.matcher(src);
        if (!m.find()) {
          throw new AssertionError(f + " has no package line");
        }
        String pkg = m.group(1);
        Set<String> used = uses.computeIfAbsent(pkg, k -> new TreeSet<>());
        for (String r : referencedPackages(src)) {
          if (!r.equals(pkg)) {
            used.add(r);
          }
        }
      }
    }
    return uses;
  }

  /**
   * The {@code io.moeprep.spark} packages one source file references, outside comments and strings.
   */
  static Set<String> referencedPackages(String src) {
    Set<String> out = new TreeSet<>();
    Matcher m = REFERENCE.matcher(code(src));
    while (m.find()) {
      out.add("io.moeprep.spark" + m.group(1));
    }
    return out;
  }

  /** The source without comments, string and char literals (replaced by blanks). */
  private static String code(String src) {
    StringBuilder b = new StringBuilder(src.length());
    int i = 0;
    int n = src.length();
    while (i < n) {
      char c = src.charAt(i);
      if (src.startsWith("//", i)) {
        int end = src.indexOf('\n', i);
        i = end < 0 ? n : end;
      } else if (src.startsWith("/*", i)) {
        int end = src.indexOf("*/", i + 2);
        i = end < 0 ? n : end + 2;
        b.append(' ');
      } else if (src.startsWith("\"\"\"", i)) {
        int end = src.indexOf("\"\"\"", i + 3);
        i = end < 0 ? n : end + 3;
        b.append(' ');
      } else if (c == '"' || c == '\'') {
        int j = i + 1;
        while (j < n && src.charAt(j) != c) {
          j += src.charAt(j) == '\\' ? 2 : 1;
        }
        i = j + 1;
        b.append(' ');
      } else {
        b.append(c);
        i++;
      }
    }
    return b.toString();
  }

  /** A cycle of the graph, as the packages on it with the first repeated at the end, or empty. */
  private static List<String> cycle(Map<String, Set<String>> uses) {
    Map<String, Integer> state = new TreeMap<>(); // 1: on the path, 2: done
    List<String> path = new ArrayList<>();
    for (String p : uses.keySet()) {
      List<String> c = visit(p, uses, state, path);
      if (!c.isEmpty()) {
        return c;
      }
    }
    return List.of();
  }

  private static List<String> visit(
      String p, Map<String, Set<String>> uses, Map<String, Integer> state, List<String> path) {
    Integer s = state.get(p);
    if (s != null && s == 2) {
      return List.of();
    }
    if (s != null) {
      List<String> c = new ArrayList<>(path.subList(path.indexOf(p), path.size()));
      c.add(p);
      return c;
    }
    state.put(p, 1);
    path.add(p);
    for (String q : uses.getOrDefault(p, Set.of())) {
      List<String> c = visit(q, uses, state, path);
      if (!c.isEmpty()) {
        return c;
      }
    }
    path.remove(path.size() - 1);
    state.put(p, 2);
    return List.of();
  }
}
