package io.moeprep.spark.sink;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;

/** What a test finds under an output directory. */
final class SinkFiles {
  private SinkFiles() {}

  /**
   * The files under {@code dir}, relative, without the checksum files that Hadoop's local file
   * system writes beside each file ({@code .NAME.crc}); empty when {@code dir} does not exist.
   */
  static Set<String> list(Path dir) throws IOException {
    Set<String> out = new TreeSet<>();
    if (!Files.exists(dir)) {
      return out;
    }
    try (Stream<Path> s = Files.walk(dir)) {
      s.filter(Files::isRegularFile)
          .filter(
              p -> !(p.getFileName().toString().startsWith(".") && p.toString().endsWith(".crc")))
          .forEach(p -> out.add(dir.relativize(p).toString()));
    }
    return out;
  }

  /** Every message in {@code t}'s cause chain, for assertions on wrapped failures. */
  static String messages(Throwable t) {
    StringBuilder b = new StringBuilder();
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      b.append(c.getClass().getName()).append(": ").append(c.getMessage()).append('\n');
    }
    return b.toString();
  }
}
