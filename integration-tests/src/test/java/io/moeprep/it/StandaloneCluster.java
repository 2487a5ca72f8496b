package io.moeprep.it;

import io.moeprep.spark.MoePrepExtensions;
import io.moeprep.spark.MoePrepPlugin;
import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.spark.sql.SparkSession;

/**
 * A Spark standalone cluster on 127.0.0.1: one Master and some Workers, each its own JVM started
 * from this test's Maven classpath. {@link #close()} kills them and the executors they started.
 */
final class StandaloneCluster implements AutoCloseable {
  private final List<Process> processes = new ArrayList<>();
  private final Path home;
  final int masterPort;
  final String classpath;
  final List<String> opens;

  StandaloneCluster(int workers, int coresPerWorker, String workerMemory) throws Exception {
    classpath = testClasspath();
    opens = Arrays.asList(System.getProperty("moeprep.jvm.opens", "").trim().split("\\s+"));
    home = Files.createTempDirectory("moeprep-spark-home");
    Files.createDirectories(home.resolve("jars")); // the launcher wants SPARK_HOME/jars to exist
    masterPort = freePort();
    try {
      start(
          "master",
          "org.apache.spark.deploy.master.Master",
          "--host",
          "127.0.0.1",
          "--port",
          Integer.toString(masterPort),
          "--webui-port",
          Integer.toString(freePort()));
      waitForPort(masterPort, 60_000);
      for (int w = 0; w < workers; w++) {
        Path dir = Files.createDirectories(home.resolve("work-" + w));
        start(
            "worker-" + w,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--webui-port",
            Integer.toString(freePort()),
            "--cores",
            Integer.toString(coresPerWorker),
            "--memory",
            workerMemory,
            "--work-dir",
            dir.toString(),
            masterUrl());
      }
    } catch (Exception e) {
      close();
      throw e;
    }
  }

  /** The executor JVMs the workers of this cluster have started and that are alive. */
  List<ProcessHandle> executors() {
    List<ProcessHandle> out = new ArrayList<>();
    for (Process p : processes) {
      p.descendants()
          .filter(ProcessHandle::isAlive)
          .filter(h -> commandLine(h).contains("CoarseGrainedExecutorBackend"))
          .forEach(out::add);
    }
    return out;
  }

  /** The whole command line (ProcessHandle.Info cuts long ones: read /proc where it exists). */
  static String commandLine(ProcessHandle h) {
    Path proc = Path.of("/proc", Long.toString(h.pid()), "cmdline");
    try {
      if (Files.exists(proc)) {
        return new String(Files.readAllBytes(proc), java.nio.charset.StandardCharsets.UTF_8)
            .replace('\0', ' ');
      }
    } catch (IOException e) {
      // gone, or not readable: fall back
    }
    return h.info().commandLine().orElse("");
  }

  /** The processes of this cluster and their descendants, for messages. */
  String describe() {
    StringBuilder b = new StringBuilder();
    for (Process p : processes) {
      b.append(p.pid()).append(' ').append(p.info().command().orElse("?")).append('\n');
      p.descendants()
          .forEach(
              h ->
                  b.append("  ")
                      .append(h.pid())
                      .append(' ')
                      .append(commandLine(h).replaceAll("-cp \\S+", "-cp ..."))
                      .append('\n'));
    }
    return b.toString();
  }

  String masterUrl() {
    return "spark://127.0.0.1:" + masterPort;
  }

  /** A session on {@code master} with the settings of every integration test (MoePrep loaded). */
  static SparkSession.Builder session(String master) {
    return SparkSession.builder()
        .master(master)
        .appName("moeprep-it")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.storage.exceptionOnPinLeak", "true")
        .config("spark.plugins", MoePrepPlugin.class.getName())
        .config("spark.sql.extensions", MoePrepExtensions.class.getName());
  }

  /**
   * {@link #session} on this cluster, with executors of one core and 1g that load this test's
   * classpath, two cores in all.
   */
  SparkSession.Builder clusterSession() {
    return session(masterUrl())
        .config("spark.executor.extraClassPath", classpath)
        .config("spark.executor.extraJavaOptions", String.join(" ", opens))
        .config("spark.executor.memory", "1g")
        .config("spark.executor.cores", "1")
        .config("spark.cores.max", "2");
  }

  /** Waits (at most 2 minutes) until {@code n} executors have registered with {@code s}. */
  void awaitExecutors(SparkSession s, int n) throws Exception {
    long end = System.currentTimeMillis() + 120_000;
    while (s.sparkContext().statusTracker().getExecutorInfos().length < n + 1) {
      if (System.currentTimeMillis() > end) {
        throw new IllegalStateException(
            "executors did not register; worker log:\n" + Files.readString(log("worker-0")));
      }
      Thread.sleep(250);
    }
  }

  /** The log of a process started by the cluster (master, worker-N). */
  Path log(String name) {
    return home.resolve(name + ".log");
  }

  private void start(String name, String mainClass, String... args) throws IOException {
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(opens);
    cmd.add("-Xmx512m");
    cmd.add("-cp");
    cmd.add(classpath);
    cmd.add(mainClass);
    cmd.addAll(Arrays.asList(args));
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.environment().put("SPARK_HOME", home.toString());
    pb.environment().put("SPARK_SCALA_VERSION", "2.13");
    pb.environment().put("SPARK_LOCAL_IP", "127.0.0.1");
    pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
    pb.redirectErrorStream(true);
    pb.redirectOutput(log(name).toFile());
    processes.add(pb.start());
  }

  private static String testClasspath() {
    String cp = System.getProperty("surefire.test.class.path");
    if (cp == null || cp.isBlank()) {
      cp = System.getProperty("java.class.path");
    }
    // keep only existing entries, absolute
    List<String> parts = new ArrayList<>();
    for (String p : cp.split(File.pathSeparator)) {
      if (!p.isBlank() && new File(p).exists()) {
        parts.add(new File(p).getAbsolutePath());
      }
    }
    return String.join(File.pathSeparator, parts);
  }

  static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
      return s.getLocalPort();
    }
  }

  private void waitForPort(int port, long timeoutMs) throws Exception {
    long end = System.currentTimeMillis() + timeoutMs;
    while (System.currentTimeMillis() < end) {
      for (Process p : processes) {
        if (!p.isAlive()) {
          throw new IllegalStateException(
              "a cluster process died: " + Files.readString(log("master")));
        }
      }
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress("127.0.0.1", port), 500);
        return;
      } catch (IOException e) {
        Thread.sleep(200);
      }
    }
    throw new IllegalStateException("the master did not open port " + port);
  }

  @Override
  public void close() {
    for (Process p : processes) {
      p.descendants().forEach(ProcessHandle::destroy);
      p.destroy();
    }
    for (Process p : processes) {
      try {
        if (!p.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) {
          p.descendants().forEach(ProcessHandle::destroyForcibly);
          p.destroyForcibly();
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        p.destroyForcibly();
      }
    }
  }
}
