package io.moeprep.spark.rapids;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.spec.Layout;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The route decision from settings alone, for every case of docs/paths.md. */
class RapidsRouteTest {
  private static RapidsRoute decide(
      Map<String, String> conf, BackendChoice backend, boolean loadable) {
    return RapidsRoute.decide(conf::get, backend, c -> loadable);
  }

  private static Map<String, String> rapids(String... kv) {
    Map<String, String> m = new HashMap<>();
    m.put("spark.plugins", "io.moeprep.spark.MoePrepPlugin, " + RapidsRoute.SQL_PLUGIN);
    for (int i = 0; i < kv.length; i += 2) {
      m.put(kv[i], kv[i + 1]);
    }
    return m;
  }

  @Test
  void withoutRapidsTheRowsPathRuns() {
    RapidsRoute r = decide(Map.of(), BackendChoice.AUTO, true);
    assertEquals(RapidsRoute.Path.ROWS_AUTO, r.path());
    assertFalse(r.rapidsLoaded());
    assertEquals(RapidsRoute.Path.CPU, decide(Map.of(), BackendChoice.CPU, true).path());
    assertEquals(
        RapidsRoute.Path.ROWS_AUTO,
        decide(Map.of("spark.plugins", "io.moeprep.spark.MoePrepPlugin"), BackendChoice.CUDA, true)
            .path());
  }

  @Test
  void theDescriptionNamesTheLayoutUsed() {
    RapidsRoute auto = decide(Map.of(), BackendChoice.AUTO, true);
    assertTrue(auto.describe().startsWith("MoePrep path ROWS_AUTO: rows layout"), auto.describe());
    String packed = auto.in(Layout.PACKED).describe();
    assertTrue(packed.startsWith("MoePrep path ROWS_AUTO: packed layout on backend auto"), packed);
    String cpu = decide(Map.of(), BackendChoice.CPU, true).in(Layout.PACKED).describe();
    assertTrue(cpu.startsWith("MoePrep path CPU: packed layout on the cpu backend"), cpu);
  }

  @Test
  void rapidsOnTheGpuTakesTheCudfRoute() {
    RapidsRoute r = decide(rapids(), BackendChoice.AUTO, true);
    assertEquals(RapidsRoute.Path.RAPIDS_CUDF, r.path());
    assertTrue(r.usesCudf());
    assertTrue(r.describe().contains(RapidsRoute.COLUMNAR_RDD), r.describe());
    assertEquals(
        RapidsRoute.Path.RAPIDS_CUDF,
        decide(rapids("spark.rapids.sql.mode", "executeOnGPU"), BackendChoice.CUDA, true).path());
  }

  @Test
  void explainOnlyPlansTheCudfRouteButRunsRows() {
    RapidsRoute r =
        decide(rapids("spark.rapids.sql.mode", "explainOnly"), BackendChoice.AUTO, true);
    assertEquals(RapidsRoute.Path.RAPIDS_EXPLAIN_ONLY, r.path());
    assertFalse(r.usesCudf());
    assertTrue(r.rapidsLoaded());
    assertEquals("explainonly", r.rapidsMode());
    assertTrue(r.describe().contains("explainOnly"), r.describe());
  }

  @Test
  void rapidsListedButAbsentDisabledOrCpuBackendRunsRows() {
    RapidsRoute absent = decide(rapids(), BackendChoice.AUTO, false);
    assertEquals(RapidsRoute.Path.ROWS_AUTO, absent.path());
    assertTrue(absent.reason().contains("not on the classpath"), absent.reason());
    RapidsRoute disabled =
        decide(rapids("spark.rapids.sql.enabled", "false"), BackendChoice.AUTO, true);
    assertEquals(RapidsRoute.Path.ROWS_AUTO, disabled.path());
    assertFalse(disabled.rapidsSqlEnabled());
    assertEquals(RapidsRoute.Path.CPU, decide(rapids(), BackendChoice.CPU, true).path());
  }
}
