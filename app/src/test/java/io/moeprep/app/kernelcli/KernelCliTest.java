package io.moeprep.app.kernelcli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import io.moeprep.kernels.cuda.CudaSupport;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.HostBuffers;
import io.moeprep.kernels.testing.LeakCheck;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/** The .npy command line end to end: outputs, input forms, and bad input (exit 2, nothing left). */
@ExtendWith(LeakCheck.class)
class KernelCliTest {
  @TempDir Path dir;
  private final ByteArrayOutputStream err = new ByteArrayOutputStream();
  private final ByteArrayOutputStream out = new ByteArrayOutputStream();

  private static final int[][] ROUTING = {
    {0, -1}, {-1, 2}, {-1, 2}, {1, 1}, {3, -1}, {3, -1}, {-1, 1}, {-1, -1}
  };

  @BeforeEach
  void inputs() throws IOException {
    try (HostBuffer tokens = HostBuffer.allocate(8 * 3 * 2);
        HostBuffer ids = HostBuffers.ints(ROUTING);
        HostBuffer ids64 = HostBuffer.allocate(16 * 8);
        HostBuffer probs = HostBuffer.allocate(16 * 4)) {
      for (int t = 0; t < 8; t++) {
        for (int i = 0; i < 3; i++) {
          tokens.putShort(2L * (t * 3 + i), (short) (0x3F80 + 16 * t + i)); // bf16 bits
        }
      }
      for (int s = 0; s < 16; s++) {
        ids64.putLong(8L * s, ids.getInt(4L * s));
        probs.putFloat(4L * s, 0.25f * (s % 4));
      }
      Npy.write(dir.resolve("tokens.npy"), "<u2", new long[] {8, 3}, tokens);
      Npy.write(dir.resolve("routing.npy"), "<i4", new long[] {8, 2}, ids);
      Npy.write(dir.resolve("routing64.npy"), "<i8", new long[] {8, 2}, ids64);
      Npy.write(dir.resolve("probs.npy"), "<f4", new long[] {8, 2}, probs);
    }
  }

  private int cli(String... args) {
    err.reset();
    out.reset();
    return KernelCli.run(
        args,
        new PrintStream(out, true, StandardCharsets.UTF_8),
        new PrintStream(err, true, StandardCharsets.UTF_8));
  }

  private String p(String name) {
    return dir.resolve(name).toString();
  }

  @Test
  void permuteWritesEveryOutputAndUnpermuteCombinesBack() throws IOException {
    assertEquals(
        0,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--probs",
            p("probs.npy"),
            "--experts",
            "4",
            "--backend",
            "cpu",
            "--out",
            p("perm")),
        err.toString());
    Path perm = dir.resolve("perm");
    long[] src = longs(perm.resolve("source_token.npy"));
    assertArrayEquals(new long[] {0, 3, 3, 6, 1, 2, 4, 5}, src);
    assertArrayEquals(new long[] {0, 0, 1, 1, 1, 1, 0, 0}, longs(perm.resolve("source_slot.npy")));
    assertArrayEquals(new long[] {1, 3, 2, 2}, longs(perm.resolve("tokens_per_expert.npy")));
    try (Npy.Array permuted = Npy.read(perm.resolve("permuted.npy"));
        Npy.Array tokens = Npy.read(dir.resolve("tokens.npy"));
        Npy.Array map = Npy.read(perm.resolve("row_id_map.npy"));
        Npy.Array pp = Npy.read(perm.resolve("permuted_probs.npy"))) {
      assertEquals("<u2", permuted.descr());
      assertArrayEquals(new long[] {8, 3}, permuted.shape());
      assertArrayEquals(new long[] {8, 2}, map.shape());
      for (int i = 0; i < 8; i++) {
        assertTrue(permuted.data().contentEquals(6L * i, tokens.data(), 6 * src[i], 6));
      }
      assertEquals(4, map.data().getInt(4 * 3)); // token 1 slot 1 -> row 4
      assertEquals(0.5f, pp.data().getFloat(4 * 1)); // row 1 = token 3 slot 0 = s 6
    }
    // unpermute without probs: one kept slot per token gives it back; token 3 sums two copies
    assertEquals(
        0,
        cli(
            "unpermute",
            "--expert-out",
            p("perm/permuted.npy"),
            "--row-id-map",
            p("perm/row_id_map.npy"),
            "--backend",
            "cpu",
            "--out",
            p("back.npy")),
        err.toString());
    try (Npy.Array back = Npy.read(dir.resolve("back.npy"));
        Npy.Array tokens = Npy.read(dir.resolve("tokens.npy"))) {
      assertArrayEquals(new long[] {8, 3}, back.shape());
      assertTrue(back.data().contentEquals(0, tokens.data(), 0, 6)); // token 0
      assertEquals(0, back.data().getShort(6L * 7)); // token 7: all -1 -> zeros
      float t3 = Float.intBitsToFloat((tokens.data().getShort(6L * 3) & 0xFFFF) << 16);
      assertEquals(Float.floatToIntBits(2 * t3) >>> 16, back.data().getShort(6L * 3) & 0xFFFF);
    }
  }

  @Test
  void int64RoutingMaskingAndCapacity() throws IOException {
    assertEquals(
        0,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing64.npy"),
            "--experts",
            "4",
            "--ep-size",
            "2",
            "--rank",
            "1",
            "--capacity",
            "1",
            "--pad-to-capacity",
            "--backend",
            "cpu",
            "--out",
            p("r1")),
        err.toString());
    // rank 1 owns experts 2 (tokens 1, 2) and 3 (tokens 4, 5); capacity 1 keeps 1 and 4
    assertArrayEquals(new long[] {1, 4}, longs(dir.resolve("r1/source_token.npy")));
    assertArrayEquals(new long[] {0, 0, 1, 1}, longs(dir.resolve("r1/tokens_per_expert.npy")));
    assertArrayEquals(new long[] {0, 0, 1, 1}, longs(dir.resolve("r1/dropped_per_expert.npy")));
  }

  @Test
  void badInputExitsTwoWithOneLineAndLeavesNothing() throws IOException {
    try (HostBuffer bad = HostBuffers.ints(ROUTING)) {
      bad.putInt(4 * 5, 9);
      Npy.write(dir.resolve("bad.npy"), "<i4", new long[] {8, 2}, bad);
    }
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("bad.npy"),
            "--experts",
            "4",
            "--out",
            p("o")));
    assertEquals(
        "moeprep-kernels: error: routing[t=2][k=1] = 9 is out of range [0, 4) or -1\n",
        err.toString());
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--experts",
            "6",
            "--ep-size",
            "4",
            "--rank",
            "0",
            "--out",
            p("o")));
    assertEquals(
        "moeprep-kernels: error: numExperts = 6 is not a multiple of epSize = 4: give an explicit"
            + " expert-to-rank placement\n",
        err.toString());
    assertEquals(2, cli("permute", "--tokens", p("tokens.npy"), "--experts", "4", "--out", p("o")));
    assertEquals(
        "moeprep-kernels: error: option --routing is missing: give --routing R.npy\n",
        err.toString());
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--experts",
            "4",
            "--dtype",
            "f32",
            "--out",
            p("o")));
    assertTrue(
        err.toString().contains("has dtype '<u2' but --dtype f32 needs '<f4'"), err.toString());
    assertEquals(
        2,
        cli(
            "unpermute",
            "--expert-out",
            p("tokens.npy"),
            "--row-id-map",
            p("routing.npy"),
            "--dtype",
            "fp8e4m3",
            "--out",
            p("o.npy")));
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--experts",
            "4",
            "--num-out",
            "3",
            "--capacity",
            "2",
            "--out",
            p("o")));
    assertEquals(
        "moeprep-kernels: error: --num-out and --capacity exclude each other: give one\n",
        err.toString());
    assertEquals(2, cli("frobnicate"));
    try (Stream<Path> s = Files.list(dir)) {
      assertFalse(
          s.anyMatch(
              x ->
                  x.getFileName().toString().startsWith("o")
                      || x.getFileName().toString().contains(".tmp-")),
          "no output may be left behind");
    }
    // an existing output is not overwritten without --force
    Files.createDirectory(dir.resolve("exists"));
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--experts",
            "4",
            "--out",
            p("exists")));
  }

  @Test
  void helpOfEveryCommandAndUsageErrorsExitTwo() throws IOException {
    assertEquals(0, cli("--help"));
    assertTrue(out.toString().startsWith("usage: "), out.toString());
    assertTrue(out.toString().contains("  permute    "), out.toString());
    assertTrue(out.toString().contains("  unpermute  "), out.toString());
    for (String c : new String[] {"permute", "unpermute"}) {
      assertEquals(0, cli(c, "--help"), err.toString());
      assertTrue(out.toString().startsWith("usage: moeprep-kernels " + c + " --"), out.toString());
      assertTrue(out.toString().contains("--out"), out.toString());
      assertEquals("", err.toString());
    }
    assertEquals(2, cli());
    assertTrue(err.toString().startsWith("usage: "), "usage on stderr: " + err);
    String[][] cases = {
      {"frobnicate", "moeprep-kernels: error: command 'frobnicate' is unknown"},
      {
        "permute --tokens t.npy --routing r.npy --experts 4 --out o --colour red",
        "moeprep-kernels: error: option --colour is unknown to 'permute'"
      },
      {
        "permute --tokens t.npy --routing r.npy --experts four --out o",
        "moeprep-kernels: error: --experts 'four' is invalid: must be an integer"
      },
      {
        "permute --tokens " + p("none.npy") + " --routing r.npy --experts 4 --out " + p("o"),
        "moeprep-kernels: error: --tokens " + p("none.npy") + " does not exist: fix --tokens"
      },
      {
        "unpermute --expert-out "
            + p("tokens.npy")
            + " --row-id-map "
            + p("routing.npy")
            + " --backend tpu --out "
            + p("o.npy"),
        "moeprep-kernels: error: --backend 'tpu' is invalid: must be one of auto, cpu, cuda"
      }
    };
    for (String[] c : cases) {
      assertEquals(2, cli(c[0].split(" ")), c[0]);
      assertTrue(err.toString().startsWith(c[1]), c[0] + ": " + err);
      assertEquals(1, err.toString().lines().count(), err.toString());
    }
  }

  @Test
  void anUnusableGpuIsAnUnavailableResource() {
    assumeFalse(CudaSupport.probe().available(), "a GPU is usable here");
    assertEquals(
        2,
        cli(
            "permute",
            "--tokens",
            p("tokens.npy"),
            "--routing",
            p("routing.npy"),
            "--experts",
            "4",
            "--backend",
            "cuda",
            "--out",
            p("o")));
    assertTrue(err.toString().startsWith("moeprep-kernels: error: backend cuda is unavailable"));
    assertTrue(
        err.toString().endsWith(": use --backend cpu (or auto, the GPU when there is one)\n"));
    assertEquals(1, err.toString().lines().count(), err.toString());
    assertFalse(
        err.toString().contains("Exception") || err.toString().contains("Error:"), err.toString());
    assertFalse(Files.exists(dir.resolve("o")));
  }

  private static long[] longs(Path path) throws IOException {
    try (Npy.Array a = Npy.read(path)) {
      assertEquals("<i8", a.descr());
      long[] v = new long[(int) a.elements()];
      for (int i = 0; i < v.length; i++) {
        v[i] = a.data().getLong(8L * i);
      }
      return v;
    }
  }
}
