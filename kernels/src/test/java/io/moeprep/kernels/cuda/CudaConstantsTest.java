package io.moeprep.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The constants that Java and CUDA share, kept equal by this test (CPU only): it reads the {@code
 * .cu}/{@code .cuh} sources and checks that their {@code constexpr} values equal the launchers'
 * constants, that each launcher's kernels are defined in its own {@code .cu} file (and in no
 * other), and that the fused kernel's result layout is the one the host reads.
 */
class CudaConstantsTest {
  private static final Path CUDA = Path.of("src/main/cuda");
  private static final Pattern CONSTEXPR =
      Pattern.compile("constexpr\\s+(?:unsigned\\s+)?int\\s+(\\w+)\\s*=\\s*([^;]+);");

  /** Every {@code constexpr int} of the CUDA sources, evaluated ({@code a}, {@code a * b}, ...). */
  private static Map<String, Long> constants() throws IOException {
    Map<String, Long> c = new HashMap<>();
    for (String f : List.of("common.cuh", "routing_map.cu", "permute.cu", "unpermute.cu")) {
      Matcher m = CONSTEXPR.matcher(source(f));
      while (m.find()) {
        Long v = eval(m.group(2).trim(), c);
        if (v != null) {
          c.putIfAbsent(m.group(1), v);
        }
      }
    }
    return c;
  }

  /** A literal, a known name, or two of them joined by *, / or +; else null (not evaluated). */
  private static Long eval(String expr, Map<String, Long> known) {
    String[] t = expr.split("\\s+");
    if (t.length == 1) {
      return term(t[0], known);
    }
    if (t.length == 3) {
      Long a = term(t[0], known);
      Long b = term(t[2], known);
      if (a == null || b == null) {
        return null;
      }
      return switch (t[1]) {
        case "*" -> a * b;
        case "/" -> a / b;
        case "+" -> a + b;
        default -> null;
      };
    }
    return null;
  }

  private static Long term(String s, Map<String, Long> known) {
    if (s.matches("\\d+")) {
      return Long.parseLong(s);
    }
    return known.get(s);
  }

  private static String source(String file) throws IOException {
    return Files.readString(CUDA.resolve(file));
  }

  @Test
  void theSharedConstantsAreEqual() throws IOException {
    Map<String, Long> c = constants();
    assertEquals(LaunchGeometry.BLOCK, c.get("kBlockThreads"), "kBlockThreads");
    assertEquals(RoutingMapLauncher.SCATTER_WARPS, c.get("kScatterWarps"), "kScatterWarps");
    assertEquals(RoutingMapLauncher.FUSED_MAX_BLOCKS, c.get("kFusedMaxBlocks"), "kFusedMaxBlocks");
    assertEquals(
        RoutingMapLauncher.FUSED_MAX_EXPERTS, c.get("kFusedMaxExperts"), "kFusedMaxExperts");
    assertEquals(4L * LaunchGeometry.BLOCK, c.get("kFusedMaxStride"), "kFusedMaxStride");
    assertEquals(
        c.get("kFusedMaxStride"),
        (long) RoutingMapLauncher.fusedStride(RoutingMapLauncher.FUSED_MAX_EXPERTS),
        "the widest table row");
    assertEquals(RoutingMapLauncher.CAP_NONE, c.get("kCapNone"), "kCapNone");
    assertEquals(RoutingMapLauncher.CAP_PER_EXPERT, c.get("kCapPerExpert"), "kCapPerExpert");
    assertEquals(RoutingMapLauncher.CAP_NUM_OUT, c.get("kCapNumOut"), "kCapNumOut");
    // a tagged count holds the slots of a block below 2^kTagShift
    assertTrue(RoutingMapLauncher.FUSED_MAX_SLOTS < 1L << c.get("kTagShift"), "kTagShift");
  }

  @Test
  void theFusedResultIsLaidOutAsTheHostReadsIt() throws IOException {
    String rm = source("routing_map.cu");
    // numOut, valid [E], offsets [E + 1], then the sequence number (RoutingScratch.fusedSeqAddress)
    assertTrue(rm.contains("result[0] = num_out;"), "numOut first");
    assertTrue(rm.contains("result[1 + e] = kept_s[e];"), "valid counts from 1");
    assertTrue(rm.contains("result[1 + e_count + e] = offsets_s[e];"), "offsets from 1 + E");
    assertTrue(rm.contains("result + 2 * e_count + 2"), "the sequence number at 2E + 2");
  }

  /** Each launcher's kernels, by the stems its launches name, against the {@code .cu} files. */
  @Test
  void eachLauncherLaunchesOnlyKernelsOfItsOwnFile() throws IOException {
    Map<String, List<String>> stems =
        Map.of(
            RoutingMapLauncher.MODULE,
            List.of(
                "moeprep_count_experts_shared",
                "moeprep_count_experts_global",
                "moeprep_scan_chunks",
                "moeprep_scatter_rows_shared",
                "moeprep_scatter_rows_global",
                "moeprep_map_fused"),
            PermuteLauncher.MODULE,
            List.of("moeprep_permute_rows_v", "moeprep_zero_padding_rows_v"),
            UnpermuteLauncher.MODULE,
            List.of("moeprep_unpermute_"),
            ChunkSortLauncher.MODULE,
            List.of("moeprep_chunk_sort_rows_v"));
    assertEquals(Fatbins.MODULES.size(), stems.size(), "one launcher per module");
    Map<String, String> sources = new HashMap<>();
    for (String m : Fatbins.MODULES) {
      sources.put(m, source(m + ".cu"));
    }
    for (var e : stems.entrySet()) {
      for (String stem : e.getValue()) {
        assertTrue(
            defines(sources.get(e.getKey()), stem), e.getKey() + ".cu defines " + stem + "...");
        for (String other : Fatbins.MODULES) {
          if (!other.equals(e.getKey())) {
            assertFalse(defines(sources.get(other), stem), other + ".cu defines " + stem);
          }
        }
      }
    }
  }

  /** A kernel name beginning with {@code stem}, written out or pasted by a macro. */
  private static boolean defines(String source, String stem) {
    return Pattern.compile("\\b" + Pattern.quote(stem)).matcher(source).find();
  }
}
