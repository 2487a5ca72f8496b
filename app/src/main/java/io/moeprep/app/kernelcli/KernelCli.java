package io.moeprep.app.kernelcli;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.CapacityPolicy;
import io.moeprep.kernels.contract.ExpertPlacement;
import io.moeprep.kernels.contract.PermuteInput;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.contract.RoutingMaps;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

/**
 * The kernel command line over {@code .npy} files ({@code bin/moeprep-kernels}). Exit codes: 0
 * done, 2 bad input or usage (one line on stderr, no output left behind), 1 any other failure.
 */
public final class KernelCli {
  static final String USAGE =
      """
      usage:
        moeprep-kernels permute --tokens T.npy --routing R.npy [--probs P.npy] --experts E
            [--ep-size R --rank r] [--num-out M | --capacity C [--pad-to-capacity]] [--align A]
            [--dtype f32|bf16|f16|fp8e4m3|fp8e5m2] [--backend auto|cpu|cuda] --out DIR [--force]
        moeprep-kernels unpermute --expert-out X.npy --row-id-map DIR/row_id_map.npy [--probs P.npy]
            [--dtype f32|bf16|f16] [--backend auto|cpu|cuda] --out OUT.npy [--force]

      Arrays are little-endian C-order .npy: tokens [N, H] (f32 <f4, bf16 <u2 bits, f16 <f2,
      fp8 |u1 bytes); routing [N, K] int32 or int64 expert ids, -1 = masked, or a mask map [N, E]
      of bool (|b1) whose probs are then dense [N, E]; probs [N, K] float32.
      permute writes DIR/permuted.npy, row_id_map.npy, source_token.npy, source_slot.npy,
      tokens_per_expert.npy, dropped_per_expert.npy, expert_offsets.npy and permuted_probs.npy
      (with --probs). The output appears only when complete.
      """;

  private static final Set<String> FLAGS = Set.of("--pad-to-capacity", "--force", "--help");

  private KernelCli() {}

  /** Runs the CLI and exits with its code. */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /** Runs the CLI; returns the exit code. */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    if (args.length == 0 || args[0].equals("--help") || args[0].equals("-h")) {
      out.print(USAGE);
      return args.length == 0 ? 2 : 0;
    }
    try {
      Map<String, String> opts = parse(args);
      if (opts.containsKey("--help")) {
        out.print(USAGE);
        return 0;
      }
      switch (args[0]) {
        case "permute" -> permute(opts, out);
        case "unpermute" -> unpermute(opts, out);
        default ->
            throw new IllegalArgumentException(
                "command '" + args[0] + "' is unknown: must be permute or unpermute (see --help)");
      }
      return 0;
    } catch (IllegalArgumentException e) {
      err.println("moeprep-kernels: error: " + e.getMessage());
      return 2;
    } catch (IOException | RuntimeException e) {
      err.println("moeprep-kernels: failed: " + e);
      return 1;
    }
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> m = new HashMap<>();
    for (int i = 1; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--")) {
        throw new IllegalArgumentException(
            "argument '" + a + "' is unexpected: options start with --");
      }
      if (FLAGS.contains(a)) {
        m.put(a, "true");
      } else if (i + 1 >= args.length) {
        throw new IllegalArgumentException("option " + a + " needs a value");
      } else {
        m.put(a, args[++i]);
      }
    }
    return m;
  }

  private static void permute(Map<String, String> o, PrintStream out) throws IOException {
    allowed(
        o,
        "--tokens",
        "--routing",
        "--probs",
        "--experts",
        "--ep-size",
        "--rank",
        "--num-out",
        "--capacity",
        "--pad-to-capacity",
        "--align",
        "--dtype",
        "--backend",
        "--out",
        "--force");
    Path dir = Path.of(required(o, "--out"));
    checkOutput(dir, o);
    MoeKernels kernels =
        MoeKernels.create(BackendChoice.parse(o.getOrDefault("--backend", "auto")));
    try (Npy.Array tokens = Npy.read(Path.of(required(o, "--tokens")));
        Npy.Array routing = Npy.read(Path.of(required(o, "--routing")));
        Npy.Array probs = o.containsKey("--probs") ? Npy.read(Path.of(o.get("--probs"))) : null) {
      requireRank(tokens, 2, "--tokens", "[N, H]");
      requireRank(routing, 2, "--routing", "[N, K] or a mask map [N, E]");
      DType dtype = dtypeOf(tokens, o.get("--dtype"));
      long n = tokens.dim(0);
      int h = intDim(tokens, 1, "--tokens");
      if (routing.dim(0) != n) {
        throw new IllegalArgumentException(
            "--routing has "
                + routing.dim(0)
                + " rows but --tokens has "
                + n
                + ": they must be equal");
      }
      int experts = positiveInt(o, "--experts", -1);
      boolean mask = routing.descr().equals("|b1") || routing.descr().equals("|u1");
      if (mask && routing.dim(1) != experts) {
        throw new IllegalArgumentException(
            "--routing is a mask map with "
                + routing.dim(1)
                + " columns but --experts = "
                + experts
                + ": they must be equal");
      }
      if (probs != null) {
        requireRank(probs, 2, "--probs", "[N, K]");
        requireDescr(probs, "<f4", "--probs");
        if (probs.dim(0) != n || probs.dim(1) != routing.dim(1)) {
          throw new IllegalArgumentException(
              "--probs has shape "
                  + java.util.Arrays.toString(probs.shape())
                  + " but --routing has "
                  + java.util.Arrays.toString(routing.shape())
                  + ": they must be equal");
        }
      }
      PermuteOptions options = options(o, experts);
      try (RoutingMaps.IndexMap converted = convert(routing, probs, mask, experts)) {
        HostBuffer ids = converted != null ? converted.routing() : routing.data();
        HostBuffer p =
            converted != null && mask ? converted.probs() : probs == null ? null : probs.data();
        int k = converted != null ? converted.topK() : intDim(routing, 1, "--routing");
        PermuteInput in = new PermuteInput(tokens.data(), n, h, dtype, ids, k, p);
        try (PermuteResult r = kernels.permute(in, options)) {
          writeAtomically(dir, o, tmp -> writePermute(tmp, r, tokens.descr(), n, k));
          out.printf(
              "permuted %d tokens x %d slots into %d rows (%s, backend %s) -> %s%n",
              n, k, r.numOut(), dtype.cliName(), kernels.backend().name(), dir);
        }
      }
    }
  }

  private static void writePermute(Path dir, PermuteResult r, String descr, long n, int k)
      throws IOException {
    long rows = r.numOut();
    Npy.write(dir.resolve("permuted.npy"), descr, new long[] {rows, r.hidden()}, r.permuted());
    Npy.write(dir.resolve("row_id_map.npy"), "<i4", new long[] {n, k}, r.rowIdMap());
    Npy.write(dir.resolve("source_token.npy"), "<i8", new long[] {rows}, r.sourceToken());
    Npy.write(dir.resolve("source_slot.npy"), "<i8", new long[] {rows}, r.sourceSlot());
    if (r.permutedProbs() != null) {
      Npy.write(dir.resolve("permuted_probs.npy"), "<f4", new long[] {rows}, r.permutedProbs());
    }
    writeLongs(dir.resolve("tokens_per_expert.npy"), r.tokensPerExpert());
    writeLongs(dir.resolve("dropped_per_expert.npy"), r.layout().droppedPerExpert());
    writeLongs(dir.resolve("expert_offsets.npy"), r.layout().offsets());
  }

  private static void writeLongs(Path path, long[] values) throws IOException {
    try (HostBuffer b = HostBuffer.allocate(8L * values.length)) {
      for (int i = 0; i < values.length; i++) {
        b.putLong(8L * i, values[i]);
      }
      Npy.write(path, "<i8", new long[] {values.length}, b);
    }
  }

  private static void unpermute(Map<String, String> o, PrintStream out) throws IOException {
    allowed(
        o, "--expert-out", "--row-id-map", "--probs", "--dtype", "--backend", "--out", "--force");
    Path dest = Path.of(required(o, "--out"));
    checkOutput(dest, o);
    MoeKernels kernels =
        MoeKernels.create(BackendChoice.parse(o.getOrDefault("--backend", "auto")));
    try (Npy.Array x = Npy.read(Path.of(required(o, "--expert-out")));
        Npy.Array map = Npy.read(Path.of(required(o, "--row-id-map")));
        Npy.Array probs = o.containsKey("--probs") ? Npy.read(Path.of(o.get("--probs"))) : null) {
      requireRank(x, 2, "--expert-out", "[numOut, H]");
      requireRank(map, 2, "--row-id-map", "[N, K]");
      requireDescr(map, "<i4", "--row-id-map");
      DType dtype = dtypeOf(x, o.get("--dtype"));
      long n = map.dim(0);
      int k = intDim(map, 1, "--row-id-map");
      if (probs != null) {
        requireDescr(probs, "<f4", "--probs");
        if (probs.elements() != n * k) {
          throw new IllegalArgumentException(
              "--probs has "
                  + probs.elements()
                  + " entries but --row-id-map has "
                  + (n * k)
                  + ": they must be equal");
        }
      }
      int h = intDim(x, 1, "--expert-out");
      UnpermuteInput in =
          new UnpermuteInput(
              x.data(), x.dim(0), map.data(), n, k, h, dtype, probs == null ? null : probs.data());
      try (HostBuffer result = kernels.unpermute(in)) {
        writeAtomically(dest, o, tmp -> Npy.write(tmp, x.descr(), new long[] {n, h}, result));
        out.printf(
            "combined %d rows into %d tokens (%s, backend %s) -> %s%n",
            x.dim(0), n, dtype.cliName(), kernels.backend().name(), dest);
      }
    }
  }

  /** A converted index map for mask maps and int64 maps; {@code null} for int32 (used as is). */
  private static RoutingMaps.IndexMap convert(
      Npy.Array routing, Npy.Array probs, boolean mask, int experts) {
    long n = routing.dim(0);
    if (mask) {
      return RoutingMaps.fromMask(routing.data(), probs == null ? null : probs.data(), n, experts);
    }
    int k = intDim(routing, 1, "--routing");
    return switch (routing.descr()) {
      case "<i4" -> null;
      case "<i8" ->
          new RoutingMaps.IndexMap(
              RoutingMaps.narrowInt64(routing.data(), n, k, experts), null, n, k);
      default ->
          throw new IllegalArgumentException(
              "--routing has dtype '" + routing.descr() + "': must be <i4, <i8 or a |b1 mask map");
    };
  }

  private static PermuteOptions options(Map<String, String> o, int experts) {
    ExpertPlacement placement = null;
    int rank = -1;
    if (o.containsKey("--ep-size") != o.containsKey("--rank")) {
      throw new IllegalArgumentException("--ep-size and --rank go together: give both or neither");
    }
    if (o.containsKey("--ep-size")) {
      placement = ExpertPlacement.contiguous(experts, positiveInt(o, "--ep-size", -1));
      rank = intOption(o, "--rank");
    }
    if (o.containsKey("--num-out") && o.containsKey("--capacity")) {
      throw new IllegalArgumentException("--num-out and --capacity exclude each other: give one");
    }
    if (o.containsKey("--pad-to-capacity") && !o.containsKey("--capacity")) {
      throw new IllegalArgumentException("--pad-to-capacity needs --capacity");
    }
    CapacityPolicy cap = CapacityPolicy.NONE;
    if (o.containsKey("--num-out")) {
      cap = CapacityPolicy.numOut(longOption(o, "--num-out"));
    } else if (o.containsKey("--capacity")) {
      cap =
          CapacityPolicy.perExpert(longOption(o, "--capacity"), o.containsKey("--pad-to-capacity"));
    }
    int align = o.containsKey("--align") ? intOption(o, "--align") : 1;
    return new PermuteOptions(experts, placement, rank, cap, align);
  }

  private static DType dtypeOf(Npy.Array a, String flag) {
    DType d = flag != null ? DType.parse(flag) : null;
    String descr = a.descr();
    DType inferred =
        switch (descr) {
          case "<f4" -> DType.F32;
          case "<u2" -> DType.BF16;
          case "<f2" -> DType.F16;
          default -> null;
        };
    if (d == null) {
      if (inferred == null) {
        throw new IllegalArgumentException(
            a.path() + " has dtype '" + descr + "': pass --dtype (fp8e4m3 or fp8e5m2 for |u1)");
      }
      return inferred;
    }
    String want =
        switch (d) {
          case F32 -> "<f4";
          case BF16 -> "<u2";
          case F16 -> "<f2";
          default -> "|u1";
        };
    if (!descr.equals(want) && !(d == DType.F16 && descr.equals("<u2"))) {
      throw new IllegalArgumentException(
          a.path()
              + " has dtype '"
              + descr
              + "' but --dtype "
              + d.cliName()
              + " needs '"
              + want
              + "'");
    }
    return d;
  }

  @FunctionalInterface
  private interface Writer {
    void write(Path tmp) throws IOException;
  }

  /** Writes into a sibling temporary path, then moves it into place; nothing partial remains. */
  private static void writeAtomically(Path dest, Map<String, String> o, Writer writer)
      throws IOException {
    Path parent = dest.toAbsolutePath().getParent();
    Files.createDirectories(parent);
    Path tmp = parent.resolve("." + dest.getFileName() + ".tmp-" + ProcessHandle.current().pid());
    boolean isDir = !dest.getFileName().toString().endsWith(".npy");
    try {
      deleteTree(tmp);
      if (isDir) {
        Files.createDirectory(tmp);
      }
      writer.write(tmp);
      if (o.containsKey("--force")) {
        deleteTree(dest);
      }
      Files.move(tmp, dest, StandardCopyOption.ATOMIC_MOVE);
    } catch (IOException | RuntimeException e) {
      deleteTree(tmp);
      throw e;
    }
  }

  private static void checkOutput(Path dest, Map<String, String> o) {
    if (Files.exists(dest) && !o.containsKey("--force")) {
      throw new IllegalArgumentException(
          "--out " + dest + " already exists: choose a new path or pass --force");
    }
  }

  private static void deleteTree(Path p) throws IOException {
    if (!Files.exists(p)) {
      return;
    }
    try (Stream<Path> s = Files.walk(p)) {
      List<Path> all = new ArrayList<>(s.sorted(Comparator.reverseOrder()).toList());
      for (Path x : all) {
        Files.delete(x);
      }
    }
  }

  private static void allowed(Map<String, String> o, String... names) {
    Set<String> ok = Set.of(names);
    for (String k : o.keySet()) {
      if (!ok.contains(k) && !k.equals("--help")) {
        throw new IllegalArgumentException("option " + k + " is unknown here (see --help)");
      }
    }
  }

  private static String required(Map<String, String> o, String name) {
    String v = o.get(name);
    if (v == null) {
      throw new IllegalArgumentException("option " + name + " is required (see --help)");
    }
    return v;
  }

  private static long longOption(Map<String, String> o, String name) {
    String v = required(o, name);
    try {
      return Long.parseLong(v);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "'" + v + "' in " + name + " is invalid: must be an integer");
    }
  }

  private static int intOption(Map<String, String> o, String name) {
    long v = longOption(o, name);
    if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "'" + v + "' in " + name + " is invalid: out of int range");
    }
    return (int) v;
  }

  private static int positiveInt(Map<String, String> o, String name, int dflt) {
    int v = o.containsKey(name) || dflt < 0 ? intOption(o, name) : dflt;
    if (v < 1) {
      throw new IllegalArgumentException("'" + v + "' in " + name + " is invalid: must be >= 1");
    }
    return v;
  }

  private static int intDim(Npy.Array a, int i, String name) {
    long d = a.dim(i);
    if (d > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          name + " dimension " + i + " = " + d + " is invalid: must be < 2^31");
    }
    return (int) d;
  }

  private static void requireRank(Npy.Array a, int rank, String name, String shape) {
    if (a.shape().length != rank) {
      throw new IllegalArgumentException(
          name
              + " "
              + a.path()
              + " has shape "
              + java.util.Arrays.toString(a.shape())
              + ": must be "
              + shape);
    }
  }

  private static void requireDescr(Npy.Array a, String descr, String name) {
    if (!a.descr().equals(descr)) {
      throw new IllegalArgumentException(
          name + " " + a.path() + " has dtype '" + a.descr() + "': must be '" + descr + "'");
    }
  }
}
