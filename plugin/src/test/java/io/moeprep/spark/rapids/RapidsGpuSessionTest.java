package io.moeprep.spark.rapids;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.testing.GpuTests;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.jar.JarEntry;
import java.util.jar.JarOutputStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The RAPIDS route end to end on a GPU: {@code spark-submit} (local mode) with the RAPIDS
 * Accelerator 26.08.1 executing on the GPU and MoePrep's plugin, the RAPIDS jar in {@code --jars}
 * and MoePrep's classes in the application jar, so that both load in one class loader as in a
 * deployment. The permute goes through {@code ColumnarRdd}: the dispatched rank partitions arrive
 * as cudf tables, the CUDA kernels permute them on the device, and the cudf tables that come out
 * hold exactly the rows of the CPU backend in a plain session. Skipped with the reason without a
 * GPU or the RAPIDS jar ({@code -Dmoeprep.requireGpu=true} fails instead).
 */
@Tag("rapids")
@Tag("gpu")
class RapidsGpuSessionTest {
  private static final long TIMEOUT_S = 480;

  @Test
  void columnarRddRouteGivesTheCpuRowsAsCudfTables() throws Exception {
    CudaSupport.Probe probe = CudaSupport.probe();
    GpuTests.require(probe.available(), probe.reason());
    String jar = RapidsExplainOnlyTest.rapidsJar();
    GpuTests.require(!jar.isEmpty() && new File(jar).isFile(), "no RAPIDS jar at '" + jar + "'");
    Path dir = Files.createTempDirectory("moeprep-rapids-gpu");
    Path result = dir.resolve("result.txt");
    // MoePrep's plugin classes and these tests go into the application jar; the child's class
    // path keeps Spark, JCuda and the kernels, without cudf-java (cudf is the RAPIDS jar's)
    List<String> appDirs = new ArrayList<>();
    List<String> cp =
        ChildJvm.classPath(
            f -> {
              if (f.isDirectory() && new File(f, "io/moeprep/spark").isDirectory()) {
                appDirs.add(f.getPath());
                return true;
              }
              String n = f.getName();
              return n.startsWith("cudf-") || n.startsWith("rapids-4-spark");
            });
    assertTrue(!appDirs.isEmpty(), "MoePrep's plugin classes are on the class path");
    Path appJar = dir.resolve("moeprep-app.jar");
    jar(appDirs, appJar);
    List<String> args =
        List.of(
            "org.apache.spark.deploy.SparkSubmit",
            "--master",
            "local[2]",
            "--jars",
            jar,
            "--class",
            RapidsGpuSessionApp.class.getName(),
            appJar.toString(),
            result.toString());
    ChildJvm.Result child = ChildJvm.run(cp, "8g", args, dir.resolve("child.log"), TIMEOUT_S);
    String tail = child.tail(8000);
    assertTrue(
        child.finished(), "the RAPIDS session did not finish in " + TIMEOUT_S + " s:\n" + tail);
    assertEquals(0, child.exitCode(), "the RAPIDS session failed:\n" + tail);
    RapidsExplainOnlyTest.SessionResult got = RapidsExplainOnlyTest.SessionResult.read(result);
    Map<String, String> v = got.values();
    assertEquals("RAPIDS_CUDF", v.get("route"), v.get("path") + "\n" + tail);
    assertTrue(Long.parseLong(v.get("tables")) > 0, "cudf tables came out: " + v);
    assertTrue(Long.parseLong(v.get("gpuBatches")) > 0, "the batches ran on the GPU: " + v);
    List<String> expected = RapidsExplainOnlyTest.cpuLines();
    got.assertRows(expected);
    // the columnar plan: every step on the GPU, the UDF's columnar form ran every batch, the only
    // row transition is the collect's at the top, and the rows are the CPU route's
    RapidsExplainOnlyTest.assertColumnarPlan(
        v.get("columnarReason"), dir.resolve("columnar"), expected);
    String physical = Files.readString(dir.resolve("columnar").resolve("physical-plan.txt"));
    assertAllGpuBelowTheCollect(physical);
    assertEquals("12", v.get("columnarGpuBatches"), "3 batches x 4 ranks on the GPU: " + v);
    assertEquals("0", v.get("columnarCpuBatches"), v.toString());
    int n = got.rows().size();
    System.out.println(
        "RAPIDS GPU session: "
            + v.get("path")
            + "; "
            + v.get("tables")
            + " cudf tables, "
            + n
            + " rows equal to the CPU API; gpuBatches="
            + v.get("gpuBatches")
            + ", cpuBatches="
            + v.get("cpuBatches")
            + "; columnar plan: the same rows, gpu batches "
            + v.get("columnarGpuBatches")
            + ", plan:\n"
            + physical);
  }

  /**
   * Adaptive execution's final plan of the collected columnar plan: the collect's {@code
   * GpuColumnarToRow} on top, and below it only RAPIDS' operators (and query-stage markers), the
   * UDF's columnar form among them: no row transition around the hidden column.
   */
  static void assertAllGpuBelowTheCollect(String physical) {
    int from = physical.indexOf("== Final Plan ==");
    int to = physical.indexOf("== Initial Plan ==");
    assertTrue(from >= 0 && to > from, "no final plan:\n" + physical);
    List<String> ops = new ArrayList<>();
    for (String line : physical.substring(from, to).split("\n")) {
      String op = line.replaceFirst("^[\\s:+|-]*", "");
      if (!op.isEmpty() && !op.startsWith("== Final Plan")) {
        ops.add(op);
      }
    }
    int top = 0;
    while (top < ops.size() && !ops.get(top).startsWith("GpuColumnarToRow")) {
      top++;
    }
    assertTrue(top < ops.size(), "no GpuColumnarToRow on top:\n" + physical);
    for (String op : ops.subList(top + 1, ops.size())) {
      assertTrue(
          op.startsWith("Gpu") || op.startsWith("ShuffleQueryStage"),
          "a step off the GPU below the collect: " + op + "\n" + physical);
    }
    assertTrue(
        physical.substring(from, to).contains("gpu_" + ColumnarPermute.UDF_NAME),
        "the UDF's columnar form is not in the plan:\n" + physical);
  }

  /** A jar of the class folders {@code dirs} (the first holding a class wins). */
  private static void jar(List<String> dirs, Path target) throws IOException {
    java.util.Set<String> seen = new java.util.HashSet<>();
    try (JarOutputStream out = new JarOutputStream(Files.newOutputStream(target))) {
      for (String d : dirs) {
        Path root = Path.of(d);
        try (Stream<Path> files = Files.walk(root)) {
          for (Path f : (Iterable<Path>) files.filter(Files::isRegularFile)::iterator) {
            String name = root.relativize(f).toString().replace(File.separatorChar, '/');
            if (seen.add(name)) {
              out.putNextEntry(new JarEntry(name));
              try {
                Files.copy(f, out);
              } catch (IOException e) {
                throw new UncheckedIOException(e);
              }
              out.closeEntry();
            }
          }
        }
      }
    }
  }
}
