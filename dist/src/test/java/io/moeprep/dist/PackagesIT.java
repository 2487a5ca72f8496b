package io.moeprep.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.spark.rapids.ChildJvm;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.jar.JarFile;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A user with nothing but Spark: {@code spark-submit --packages io.moeprep:moeprep-spark_2.13:V
 * --repositories file:...} resolves the dist jar through Ivy from the file repository that the
 * build lays out in {@code target/repo}, and runs the main job's demo (generate, permute,
 * unpermute, verify byte for byte, stats) in local mode. Spark's own launcher class ({@code
 * SparkSubmit}) runs in a child JVM whose class path holds Spark and nothing of MoePrep, JCuda or
 * picocli: everything else must come from the package.
 */
class PackagesIT {
  @TempDir Path tmp;

  @Test
  void distJarHoldsWhatAClusterNeedsBesideSpark() throws Exception {
    Path jar = repoJar();
    try (JarFile j = new JarFile(jar.toFile())) {
      Set<String> names = j.stream().map(e -> e.getName()).collect(Collectors.toSet());
      for (String must :
          List.of(
              "io/moeprep/spark/MoePrepPlugin.class",
              "io/moeprep/kernels/MoeKernels.class",
              "io/moeprep/app/MoePrepJob.class",
              "jcuda/driver/JCudaDriver.class",
              "lib/libJCudaDriver-12.6.0-linux-x86_64.so",
              "META-INF/services/org.apache.spark.sql.sources.DataSourceRegister")) {
        assertTrue(names.contains(must), jar + " lacks " + must);
      }
      assertFalse(
          names.stream().anyMatch(n -> n.startsWith("ai/rapids/cudf/")),
          jar + " bundles cudf, which the RAPIDS Accelerator provides");
      assertFalse(
          names.stream().anyMatch(n -> n.startsWith("org/apache/spark/")), jar + " bundles Spark");
    }
    // what Ivy resolves for a user: the dependencies of the POM outside the provided and test
    // scopes (Spark and cudf are provided); none may remain, JCuda's natives profile least of all
    String pom = Files.readString(repoPom());
    Matcher deps =
        Pattern.compile(
                "<project[^>]*>.*?\n  <dependencies>(.*?)\n  </dependencies>", Pattern.DOTALL)
            .matcher(pom);
    List<String> resolved = new ArrayList<>();
    if (deps.find()) {
      for (String d : deps.group(1).split("</dependency>")) {
        Matcher id = Pattern.compile("<artifactId>([^<]+)</artifactId>").matcher(d);
        if (id.find() && !d.matches("(?s).*<scope>(provided|test)</scope>.*")) {
          resolved.add(id.group(1));
        }
      }
    }
    assertEquals(List.of(), resolved, "the dist POM makes Ivy resolve these:\n" + pom);
  }

  @Test
  void sparkSubmitPackagesRunsTheDemo() throws Exception {
    String repo = System.getProperty("moeprep.dist.repo");
    String coordinates = System.getProperty("moeprep.dist.coordinates");
    List<String> sparkOnly =
        ChildJvm.classPath(
            f -> {
              String p = f.getPath();
              return p.contains("moeprep")
                  || p.contains("/org/jcuda/")
                  || p.contains("/info/picocli/")
                  || p.endsWith("/classes")
                  || p.endsWith("/test-classes");
            });
    Path out = tmp.resolve("out");
    List<String> args =
        List.of(
            "org.apache.spark.deploy.SparkSubmit",
            "--master",
            "local[2]",
            "--packages",
            coordinates,
            "--repositories",
            Path.of(repo).toUri().toString(),
            "--conf",
            "spark.jars.ivy=" + tmp.resolve("ivy"),
            "--conf",
            "spark.plugins=io.moeprep.spark.MoePrepPlugin",
            "--conf",
            "spark.sql.extensions=io.moeprep.spark.MoePrepExtensions",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--conf",
            "spark.driver.bindAddress=127.0.0.1",
            "--conf",
            "spark.sql.shuffle.partitions=4",
            "--class",
            "io.moeprep.app.MoePrepJob",
            "spark-internal",
            "demo",
            "--out",
            out.toString(),
            "--tokens",
            "512",
            "--hidden",
            "64",
            "--ep-size",
            "2",
            "--experts",
            "8",
            "--tokens-per-batch",
            "256");
    ChildJvm.Result r = ChildJvm.run(sparkOnly, "1g", args, tmp.resolve("submit.log"), 600);
    assertTrue(r.finished(), "spark-submit did not finish in 600 s:\n" + r.tail(4000));
    assertEquals(0, r.exitCode(), "spark-submit failed:\n" + r.tail(6000));
    String artifact = coordinates.split(":")[1];
    assertTrue(
        r.log().lines().anyMatch(l -> l.contains(artifact) && l.contains("found")),
        "Ivy did not resolve " + coordinates + ":\n" + r.tail(4000));
    assertTrue(
        r.log().lines().anyMatch(l -> l.startsWith("verify: OK")),
        "no 'verify: OK' line:\n" + r.tail(4000));
    assertTrue(Files.exists(out.resolve("permuted")), "no permuted output in " + out);
  }

  private static Path repoDir() {
    String[] c = System.getProperty("moeprep.dist.coordinates").split(":");
    return Path.of(System.getProperty("moeprep.dist.repo"), c[0].replace('.', '/'), c[1], c[2]);
  }

  private static Path repoJar() {
    String[] c = System.getProperty("moeprep.dist.coordinates").split(":");
    return repoDir().resolve(c[1] + "-" + c[2] + ".jar");
  }

  private static Path repoPom() {
    String[] c = System.getProperty("moeprep.dist.coordinates").split(":");
    return repoDir().resolve(c[1] + "-" + c[2] + ".pom");
  }
}
