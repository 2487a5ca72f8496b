package io.moeprep.spark.rapids;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.api.RapidsPermute;
import io.moeprep.spark.spec.PermuteSpec;
import java.lang.reflect.Method;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * A session without RAPIDS never loads a cudf class: cudf-java is on this test class path (it is a
 * provided dependency), so loading one would show here.
 */
class CudfIsolationTest {
  private static boolean loaded(String name) throws Exception {
    Method m = ClassLoader.class.getDeclaredMethod("findLoadedClass", String.class);
    m.setAccessible(true);
    return m.invoke(CudfIsolationTest.class.getClassLoader(), name) != null;
  }

  @Test
  void aPlainSessionPermutesWithoutLoadingCudf() throws Exception {
    Assumptions.assumeFalse(
        loaded("ai.rapids.cudf.Table"), "another test of this JVM already loaded cudf classes");
    TokenBatch tb = TokenBatch.random(new SplittableRandom(3), 2, 50, 9, DType.F32, 2, 8, 0.1);
    PermuteSpec spec =
        PermuteSpec.builder(8, 2).hidden(9, DType.F32).topK(2).backend(BackendChoice.AUTO).build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(SparkSessions.local(), true), spec);
    assertEquals(RapidsRoute.Path.ROWS_AUTO, out.route().path());
    assertFalse(out.rows().collectAsList().isEmpty());
    IllegalStateException e =
        assertThrows(IllegalStateException.class, () -> RapidsPermute.tables(out));
    assertFalse(loaded("ai.rapids.cudf.Table"), "cudf classes were loaded: " + e.getMessage());
    assertFalse(loaded("ai.rapids.cudf.ColumnVector"));
  }
}
