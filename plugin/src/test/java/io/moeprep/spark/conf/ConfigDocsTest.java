package io.moeprep.spark.conf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
  void internalEntriesAreDocumentedApartAndLeftOutOfTheTemplate() {
    String md = ConfigDocs.markdown();
    int internal = md.indexOf("\n## Internal settings\n");
    assertTrue(internal > 0, "configs.md has a section of internal settings");
    String template = ConfigDocs.defaultsTemplate();
    for (ConfigEntry<?> e : MoePrepConf.ALL) {
      int at = md.indexOf("| `" + e.key() + "` |");
      assertTrue(at > 0, e.key() + " is documented");
      assertEquals(e.key().startsWith("spark.moeprep.internal."), e.internal(), e.key());
      assertEquals(e.internal(), at > internal, e.key() + " is in the right section");
      if (e.internal()) {
        assertFalse(e.userFacing(), e.key());
        assertFalse(template.contains(e.key()), e.key() + " is not in the template");
      } else {
        // every setting a user may set is in the template, so that it cannot drift
        assertTrue(e.userFacing(), e.key() + " is not internal: it is user-facing");
        assertTrue(
            template.contains("\n# " + e.key() + "  " + e.defaultValue() + "\n"),
            e.key() + " is in the template with its default");
      }
    }
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
    assertEquals(
        "'48' in spark.moeprep.internal.cuda.fusedMinBlockSlots is invalid: must be a power of two"
            + " in [32, 1073741824]",
        assertThrows(
                IllegalArgumentException.class,
                () -> MoePrepConf.CUDA_FUSED_MIN_BLOCK_SLOTS.parse("48"))
            .getMessage());
    assertEquals(Long.valueOf(512L << 20), MoePrepConf.GPU_MEMORY_LIMIT.parse("512m"));
    assertEquals(Long.valueOf(1073741824L), MoePrepConf.GPU_MEMORY_LIMIT.parse("1073741824"));
    assertEquals(
        "'-1' in spark.moeprep.gpu.memoryLimit is invalid: must be a size in bytes >= 0, such as"
            + " 1073741824, 512m or 2g",
        assertThrows(IllegalArgumentException.class, () -> MoePrepConf.GPU_MEMORY_LIMIT.parse("-1"))
            .getMessage());
    assertEquals(Integer.valueOf(8192), MoePrepConf.TOKENS_PER_BATCH.parse(null));
    assertEquals("cuda", MoePrepConf.BACKEND.parse(" CUDA "));
  }
}
