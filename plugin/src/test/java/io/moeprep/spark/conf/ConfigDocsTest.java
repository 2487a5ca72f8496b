package io.moeprep.spark.conf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/** The committed docs match the typed entries; bad values fail with the house message. */
class ConfigDocsTest {
  @Test
  void committedConfigDocsAreCurrent() throws Exception {
    Path root = Path.of(System.getProperty("user.dir")).getParent();
    assertEquals(
        ConfigDocs.markdown(),
        Files.readString(root.resolve("docs/configs.md")),
        "docs/configs.md is stale: run mvn -pl plugin prepare-package (or ConfigDocs) and commit");
    assertEquals(
        ConfigDocs.defaultsTemplate(),
        Files.readString(root.resolve("conf/spark-defaults.conf.template")),
        "conf/spark-defaults.conf.template is stale: rebuild and commit");
  }

  @Test
  void invalidValuesNameKeyValueAndConstraint() {
    assertEquals(
        "'0' in spark.moeprep.tokensPerBatch is invalid: must be in [1, 2147483647]",
        assertThrows(IllegalArgumentException.class, () -> MoePrepConf.TOKENS_PER_BATCH.parse("0"))
            .getMessage());
    assertEquals(
        "'gpu' in spark.moeprep.backend is invalid: must be one of auto, cpu, cuda",
        assertThrows(IllegalArgumentException.class, () -> MoePrepConf.BACKEND.parse("gpu"))
            .getMessage());
    assertEquals(
        "'x' in spark.moeprep.packed.maxBlockBytes is invalid: must be in [1, 2147483647]",
        assertThrows(
                IllegalArgumentException.class, () -> MoePrepConf.PACKED_MAX_BLOCK_BYTES.parse("x"))
            .getMessage());
    assertEquals(Integer.valueOf(8192), MoePrepConf.TOKENS_PER_BATCH.parse(null));
    assertEquals("cuda", MoePrepConf.BACKEND.parse(" CUDA "));
  }
}
