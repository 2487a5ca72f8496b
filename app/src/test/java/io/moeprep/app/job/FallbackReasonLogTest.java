package io.moeprep.app.job;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import io.moeprep.app.MoePrepJob;
import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.spark.rapids.ChildJvm;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Where no GPU is usable, a whole run with backend {@code auto} (the demo: permute and unpermute in
 * one session, with MoePrep's Spark plugin) says why it runs on the CPU once, as one short line: in
 * a JVM of its own, since the reason is logged once per process, with every logger at info.
 */
class FallbackReasonLogTest {
  @TempDir Path tmp;

  @Test
  void theGpuUnavailableReasonIsLoggedOnceAndShort() throws Exception {
    CudaSupport.Probe probe = CudaSupport.probe();
    assumeFalse(probe.available(), "a GPU is usable here: backend auto does not fall back");
    String reason = probe.reason();

    Path log4j = tmp.resolve("log4j2.properties");
    Files.writeString(
        log4j,
        String.join(
            "\n",
            "rootLogger.level = info",
            "rootLogger.appenderRef.out.ref = out",
            "appender.out.type = Console",
            "appender.out.name = out",
            "appender.out.layout.type = PatternLayout",
            "appender.out.layout.pattern = %p %c: %m%n",
            ""));
    ChildJvm.Result r =
        ChildJvm.run(
            ChildJvm.classPath(f -> false),
            "1g",
            List.of(
                "-Dlog4j2.configurationFile=" + log4j,
                "-Dspark.master=local[2]",
                "-Dspark.plugins=io.moeprep.spark.MoePrepPlugin",
                "-Dspark.sql.extensions=io.moeprep.spark.MoePrepExtensions",
                "-Dspark.ui.enabled=false",
                "-Dspark.ui.showConsoleProgress=false",
                "-Dspark.driver.host=127.0.0.1",
                "-Dspark.driver.bindAddress=127.0.0.1",
                "-Dspark.sql.shuffle.partitions=4",
                MoePrepJob.class.getName(),
                "demo",
                "--tokens",
                "256",
                "--backend",
                "auto",
                "--out",
                tmp.resolve("out").toString()),
            tmp.resolve("child.log"),
            600);
    assertTrue(r.finished(), "the demo did not finish in 600 s:\n" + r.tail(4000));
    assertEquals(0, r.exitCode(), r.tail(4000));
    assertTrue(r.log().contains("backend cpu"), "the demo ran on the CPU:\n" + r.tail(4000));

    List<String> all = r.log().lines().toList();
    List<String> lines = all.stream().filter(l -> l.contains(reason)).toList();
    assertEquals(1, lines.size(), "'" + reason + "' is logged once, in:\n" + r.log());
    String line = lines.get(0);
    assertTrue(line.length() <= 160, "one short line: " + line);
    assertFalse(line.contains("/tmp") || line.contains(tmp.toString()), "no temp path: " + line);
    assertFalse(
        line.matches(".*\\b[A-Z]\\w*(Exception|Error)\\b.*"), "no exception class name: " + line);
    int at = all.indexOf(line);
    assertFalse(
        at + 1 < all.size() && all.get(at + 1).startsWith("\tat "),
        "no stack trace after: " + line);
  }
}
