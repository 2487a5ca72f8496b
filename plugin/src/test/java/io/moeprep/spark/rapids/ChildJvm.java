package io.moeprep.spark.rapids;

import java.io.File;
import java.lang.management.ManagementFactory;
import java.net.URISyntaxException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.stream.Collectors;

/**
 * A child JVM for a Spark session with the RAPIDS Accelerator, so that its plugin does not meet
 * this JVM's shared session: this JVM's runtime, Spark's {@code --add-opens} flags ({@code
 * moeprep.jvm.opens}, and this JVM's own) and class path, less the entries that the session must
 * load elsewhere.
 */
public final class ChildJvm {
  private ChildJvm() {}

  /** How the child ended: whether it finished in time, its exit code and its output. */
  public record Result(boolean finished, int exitCode, String log) {
    /** The last {@code chars} characters of the output, for failure messages. */
    public String tail(int chars) {
      return log.substring(Math.max(0, log.length() - chars));
    }
  }

  /**
   * The class path of these tests, less the entries that {@code drop} rejects: the URLs of the
   * class loaders that loaded this class (a test launcher's own, such as JUnit's console launcher
   * with {@code --class-path}), then {@code java.class.path}.
   */
  public static List<String> classPath(Predicate<File> drop) {
    Set<String> entries = new LinkedHashSet<>();
    for (ClassLoader l = ChildJvm.class.getClassLoader(); l != null; l = l.getParent()) {
      if (l instanceof URLClassLoader u) {
        for (URL url : u.getURLs()) {
          if ("file".equals(url.getProtocol())) {
            try {
              entries.add(new File(url.toURI()).getPath());
            } catch (URISyntaxException e) {
              throw new IllegalStateException("class path entry " + url, e);
            }
          }
        }
      }
    }
    entries.addAll(Arrays.asList(System.getProperty("java.class.path").split(File.pathSeparator)));
    return entries.stream()
        .filter(e -> !e.isEmpty() && !drop.test(new File(e)))
        .collect(Collectors.toList());
  }

  /** Runs {@code java [opens] -Xmx.. -cp classPath args...}, its output in {@code log}. */
  public static Result run(
      List<String> classPath, String xmx, List<String> args, Path log, long timeoutS)
      throws Exception {
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(Arrays.asList(System.getProperty("moeprep.jvm.opens", "").trim().split("\\s+")));
    // and this JVM's own (a JVM started without Maven, e.g. from a GPU bundle)
    for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
      if (a.startsWith("--add-") && !cmd.contains(a)) {
        cmd.add(a);
      }
    }
    cmd.add("-Xmx" + xmx);
    cmd.add("-cp");
    cmd.add(String.join(File.pathSeparator, classPath));
    cmd.addAll(args);
    cmd.removeIf(String::isEmpty);
    Process p =
        new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    boolean done = p.waitFor(timeoutS, TimeUnit.SECONDS);
    if (!done) {
      p.destroyForcibly();
      p.waitFor(30, TimeUnit.SECONDS);
    }
    return new Result(
        done, done ? p.exitValue() : -1, Files.readString(log, StandardCharsets.UTF_8));
  }
}
