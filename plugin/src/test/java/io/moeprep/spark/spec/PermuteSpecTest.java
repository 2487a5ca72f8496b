package io.moeprep.spark.spec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.kernels.contract.CapacityPolicy;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.Test;

/** The spec's three parts, and where each setting comes from: code, then session, then default. */
class PermuteSpecTest {
  private static Function<String, String> conf(Map<String, String> m) {
    return m::get;
  }

  @Test
  void shapeSettingsAndColumnsOfABuiltSpec() {
    PermuteSpec spec =
        PermuteSpec.builder(16, 4)
            .hidden(256, DType.BF16)
            .topK(4)
            .perExpertCapacity(12, true)
            .align(8)
            .layout(Layout.PACKED)
            .columns("t", "h", "e", "p", "b")
            .build();
    ProblemShape s = spec.shape();
    assertEquals(16, s.numExperts());
    assertEquals(4, s.epSize());
    assertEquals(List.of(), s.placement());
    assertEquals(512, s.rowBytes());
    assertEquals(CapacityPolicy.perExpert(12, true), s.capacityPolicy());
    assertEquals(8192, s.tokensPerBatch(), "the default");
    assertEquals(4, s.expertPlacement().numRanks());
    assertEquals(Layout.PACKED, spec.settings().layout());
    assertEquals(Dispatch.ALL_TO_ALL, spec.settings().dispatch(), "the default");
    assertEquals(new Columns("t", "h", "e", "p", "b"), spec.columns());
    assertEquals(
        Columns.DEFAULT, PermuteSpec.builder(2, 1).hidden(1, DType.F32).topK(1).build().columns());
  }

  @Test
  void settingsGivenInCodeWinOverTheSessionWhichWinsOverTheDefaults() {
    PermuteSpec spec =
        PermuteSpec.builder(8, 2).hidden(4, DType.F32).topK(2).backend(BackendChoice.CPU).build();
    PermuteSpec r =
        spec.resolve(
            conf(
                Map.of(
                    "spark.moeprep.backend", "cuda",
                    "spark.moeprep.layout", "packed",
                    "spark.moeprep.tokensPerBatch", "100",
                    "spark.moeprep.internal.cpu.threads", "3")));
    assertEquals(BackendChoice.CPU, r.settings().backend(), "code wins");
    assertEquals(Layout.PACKED, r.settings().layout(), "then the session");
    assertEquals(100, r.shape().tokensPerBatch());
    assertEquals(BadRowPolicy.FAIL, r.settings().badRows(), "then the default");
    assertEquals(3, r.settings().tuning().cpuThreads());
    assertEquals(Layout.ROWS, spec.settings().layout(), "unresolved: code over the defaults");

    // resolved settings stay: resolving again, or rebuilding, keeps them
    PermuteSpec again = r.resolve(conf(Map.of("spark.moeprep.layout", "rows")));
    assertEquals(Layout.PACKED, again.settings().layout());
    assertEquals(r.settings(), r.toBuilder().build().settings());
    assertEquals(r.shape(), r.toBuilder().build().shape());
    assertEquals(
        Dispatch.ALL_GATHER,
        r.toBuilder().dispatch(Dispatch.ALL_GATHER).build().settings().dispatch());
  }

  @Test
  void aRequiredGpuTurnsAutoIntoCuda() {
    PermuteSpec spec = PermuteSpec.builder(8, 2).hidden(4, DType.F32).topK(2).build();
    assertEquals(
        BackendChoice.CUDA,
        spec.resolve(conf(Map.of("spark.moeprep.gpu.required", "true"))).settings().backend());
    assertEquals(BackendChoice.AUTO, spec.resolve(k -> null).settings().backend());
  }

  @Test
  void invalidValuesFailWhereTheyAreGiven() {
    PermuteSpec.Builder b = PermuteSpec.builder(8, 2).hidden(4, DType.F32).topK(2);
    assertEquals(
        "'0' in spark.moeprep.dispatch.chunkBytes is invalid: must be in [1, 1073741824]",
        assertThrows(IllegalArgumentException.class, () -> b.chunkBytes(0)).getMessage());
    assertEquals(
        "tokensPerBatch = 0 is invalid: must be >= 1",
        assertThrows(IllegalArgumentException.class, () -> b.tokensPerBatch(0)).getMessage());
    assertEquals(
        "'x' in spark.moeprep.layout is invalid: must be one of packed, rows",
        assertThrows(
                IllegalArgumentException.class,
                () -> b.build().resolve(conf(Map.of("spark.moeprep.layout", "x"))))
            .getMessage());
    assertEquals(
        "align = 4 cannot be combined with numOut: choose one of them",
        assertThrows(IllegalArgumentException.class, () -> b.numOut(10).align(4).build())
            .getMessage());
    assertEquals(
        "layout 'blocks' is invalid: must be one of rows, packed",
        assertThrows(IllegalArgumentException.class, () -> Layout.parse("blocks")).getMessage());
  }

  @Test
  void optionsOfTheDataSource() {
    PermuteSpec spec =
        PermuteSpec.fromOptions(
            Map.of(
                "numExperts", "6",
                "PLACEMENT", "2, 0, 2, 1, 0, 2",
                "hidden", "5",
                "dtype", "f16",
                "topK", "3",
                "capacity", "numOut:40",
                "layout", "packed",
                "chunkBytes", "1024",
                "tokenIdCol", "id"));
    assertEquals(3, spec.shape().epSize(), "from the placement");
    assertEquals(List.of(2, 0, 2, 1, 0, 2), spec.shape().placement());
    assertEquals(CapacityPolicy.numOut(40), spec.shape().capacityPolicy());
    assertEquals(Layout.PACKED, spec.settings().layout());
    assertEquals("id", spec.columns().tokenId());
    assertEquals("hidden", spec.columns().hidden());
    assertEquals("packed", PermuteSpec.option(Map.of("LAYOUT", "packed"), "layout"));
    assertNull(PermuteSpec.option(Map.of(), "layout"));
    assertTrue(
        assertThrows(
                IllegalArgumentException.class,
                () -> PermuteSpec.fromOptions(Map.of("numExperts", "6")))
            .getMessage()
            .contains("option epSize is missing"));
  }

  @Test
  void internalTuningBecomesTheKernelsTuning() {
    TuningSettings t = TuningSettings.read(k -> null);
    KernelTuning k = t.kernelTuning();
    assertEquals(Runtime.getRuntime().availableProcessors(), k.cpuThreads(), "0: every core");
    assertEquals(KernelTuning.DEFAULT.fusedMap(), k.fusedMap());
    assertEquals(KernelTuning.DEFAULT.fusedMinBlockSlots(), k.fusedMinBlockSlots());
    assertEquals(KernelTuning.DEFAULT.fusedTaggedCells(), k.fusedTaggedCells());
    assertNull(k.failLaunch(), "empty: no fault injection");
    KernelTuning set =
        TuningSettings.read(
                conf(
                    Map.of(
                        "spark.moeprep.internal.cpu.threads", "2",
                        "spark.moeprep.internal.cuda.fusedMap", "false",
                        "spark.moeprep.internal.cuda.fusedMinBlockSlots", "64",
                        "spark.moeprep.internal.cuda.fusedTaggedCells", "0",
                        "spark.moeprep.internal.cuda.syncLaunches", "true",
                        "spark.moeprep.internal.cuda.failLaunch", "moeprep_permute_rows")))
            .kernelTuning();
    assertEquals(new KernelTuning(2, false, 64, 0, true, "moeprep_permute_rows"), set);
  }

  @Test
  void aSpecTravelsWithTheTasks() throws Exception {
    PermuteSpec spec =
        PermuteSpec.builder(6, 3)
            .placement(new int[] {2, 0, 2, 1, 0, 2})
            .hidden(5, DType.F32)
            .topK(4)
            .badRows(BadRowPolicy.SKIP)
            .build()
            .resolve(k -> null);
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
      out.writeObject(spec);
    }
    PermuteSpec back;
    try (ObjectInputStream in =
        new ObjectInputStream(new ByteArrayInputStream(bytes.toByteArray()))) {
      back = (PermuteSpec) in.readObject();
    }
    assertEquals(spec.shape(), back.shape());
    assertEquals(spec.settings(), back.settings());
    assertEquals(spec.columns(), back.columns());
    assertEquals(spec.shape().expertPlacement(), back.shape().expertPlacement());
  }
}
