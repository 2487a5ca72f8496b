package io.moeprep.app.kernelcli;

import io.moeprep.app.cli.CapacityOptions;
import io.moeprep.app.cli.DTypeOption;
import io.moeprep.app.cli.HelpOption;
import io.moeprep.app.cli.MoePrepCommandLine;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.MoeKernels;
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
import java.util.List;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * The kernel command line over {@code .npy} files ({@code bin/moeprep-kernels}): {@code permute}
 * and {@code unpermute} on the CPU or the GPU. Exit codes ({@link MoePrepCommandLine}): 0 done, 2 a
 * usage error, bad input or an unavailable backend (one line on stderr, no output left behind), 1
 * any other failure.
 */
@Command(
    name = "moeprep-kernels",
    customSynopsis = {
      "",
      "  moeprep-kernels permute --tokens T.npy --routing R.npy [--probs P.npy] --experts E",
      "      [--ep-size R --rank r] [--num-out M | --capacity C [--pad-to-capacity]] [--align A]",
      "      [--dtype f32|bf16|f16|fp8e4m3|fp8e5m2] [--backend auto|cpu|cuda] --out DIR [--force]",
      "  moeprep-kernels unpermute --expert-out X.npy --row-id-map DIR/row_id_map.npy"
          + " [--probs P.npy]",
      "      [--dtype f32|bf16|f16] [--backend auto|cpu|cuda] --out OUT.npy [--force]"
    },
    description = {
      "Arrays are little-endian C-order .npy: tokens [N, H] (f32 <f4, bf16 <u2 bits, f16 <f2,",
      "fp8 |u1 bytes); routing [N, K] int32 or int64 expert ids, -1 = masked, or a mask map [N, E]",
      "of bool (|b1) whose probs are then dense [N, E]; probs [N, K] float32.",
      "permute writes DIR/permuted.npy, row_id_map.npy, source_token.npy, source_slot.npy,",
      "tokens_per_expert.npy, dropped_per_expert.npy, expert_offsets.npy and permuted_probs.npy",
      "(with --probs). The output appears only when complete."
    },
    footer = "moeprep-kernels <command> --help shows a command's options.",
    subcommands = {KernelCli.Permute.class, KernelCli.Unpermute.class})
public final class KernelCli {
  @Mixin HelpOption help;

  /** A subcommand: checks its options and files, then writes its output. */
  private interface KernelCommand {
    void run(PrintStream out) throws IOException;
  }

  KernelCli() {}

  /** Runs the CLI and exits with its code. */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /** Runs the CLI; returns the exit code. */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    MoePrepCommandLine cli =
        new MoePrepCommandLine(
            new KernelCli(), out, err, false, MoePrepCommandLine.verboseFromEnvironment());
    return cli.execute(
        args,
        spec -> {
          ((KernelCommand) spec.userObject()).run(out);
          return MoePrepCommandLine.OK;
        });
  }

  /** {@code moeprep-kernels permute}. */
  @Command(
      name = "permute",
      header = "permute .npy tokens into expert-grouped rows",
      customSynopsis = {
        "moeprep-kernels permute --tokens T.npy --routing R.npy [--probs P.npy] --experts E",
        "    [--ep-size R --rank r] [--num-out M | --capacity C [--pad-to-capacity]] [--align A]",
        "    [--dtype f32|bf16|f16|fp8e4m3|fp8e5m2] [--backend auto|cpu|cuda] --out DIR [--force]"
      },
      description = {
        "Writes into DIR: permuted.npy [numOut, H], row_id_map.npy (int32 [N, K]: the output row",
        "of each slot, or -1), source_token.npy and source_slot.npy (int64 [numOut], -1 on",
        "padding rows), permuted_probs.npy (float32, with --probs), tokens_per_expert.npy (int64",
        "[E]), dropped_per_expert.npy and expert_offsets.npy (int64 [E+1]). DIR appears only",
        "when complete."
      })
  static final class Permute implements KernelCommand {
    @Option(
        names = "--tokens",
        paramLabel = "T.npy",
        required = true,
        description = "tokens [N, H]")
    Path tokens;

    @Option(
        names = "--routing",
        paramLabel = "R.npy",
        required = true,
        description = "expert ids [N, K] (int32 or int64, -1 = masked) or a bool mask map [N, E]")
    Path routing;

    @Option(
        names = "--probs",
        paramLabel = "P.npy",
        description = "float32 weights [N, K] ([N, E] with a mask map)")
    Path probs;

    @Option(
        names = "--experts",
        paramLabel = "E",
        required = true,
        description = "number of experts")
    int experts;

    @Option(
        names = "--ep-size",
        paramLabel = "R",
        description = "expert-parallel ranks (with --rank)")
    Integer epSize;

    @Option(
        names = "--rank",
        paramLabel = "r",
        description = "the rank to permute for (with --ep-size)")
    Integer rank;

    @Mixin CapacityOptions capacity = new CapacityOptions();

    @Option(
        names = "--dtype",
        paramLabel = "D",
        converter = DTypeOption.class,
        description = "element type (default: from the .npy dtype; needed for fp8)")
    DType dtype;

    @Option(names = "--backend", paramLabel = "B", description = "auto, cpu or cuda (default auto)")
    BackendChoice backend = BackendChoice.AUTO;

    @Option(names = "--out", paramLabel = "DIR", required = true, description = "output directory")
    Path out;

    @Option(names = "--force", description = "replace DIR if it exists")
    boolean force;

    @Mixin HelpOption help;

    @Override
    public void run(PrintStream stdout) throws IOException {
      OptionChecks.inRange("--experts", experts, 1, Integer.MAX_VALUE);
      PermuteOptions options = options();
      MoeKernels kernels =
          prepare(backend, out, force, "--tokens", tokens, "--routing", routing, "--probs", probs);
      try (Npy.Array tokens = Npy.read(this.tokens);
          Npy.Array routing = Npy.read(this.routing);
          Npy.Array probs = this.probs == null ? null : Npy.read(this.probs)) {
        requireRank(tokens, 2, "--tokens", "[N, H]");
        requireRank(routing, 2, "--routing", "[N, K] or a mask map [N, E]");
        DType dtype = dtypeOf(tokens, this.dtype);
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
        try (RoutingMaps.IndexMap converted = convert(routing, probs, mask, experts)) {
          HostBuffer ids = converted != null ? converted.routing() : routing.data();
          HostBuffer p =
              converted != null && mask ? converted.probs() : probs == null ? null : probs.data();
          int k = converted != null ? converted.topK() : intDim(routing, 1, "--routing");
          PermuteInput in = new PermuteInput(tokens.data(), n, h, dtype, ids, k, p);
          try (PermuteResult r = kernels.permute(in, options)) {
            writeAtomically(out, force, tmp -> writePermute(tmp, r, tokens.descr(), n, k));
            stdout.printf(
                "permuted %d tokens x %d slots into %d rows (%s, backend %s) -> %s%n",
                n, k, r.numOut(), dtype.cliName(), kernels.backend().name(), out);
          }
        }
      }
    }

    private PermuteOptions options() {
      ExpertPlacement placement = null;
      int r = -1;
      if ((epSize == null) != (rank == null)) {
        throw new IllegalArgumentException(
            "--ep-size and --rank go together: give both or neither");
      }
      if (epSize != null) {
        placement =
            ExpertPlacement.contiguous(
                experts, OptionChecks.inRange("--ep-size", epSize, 1, Integer.MAX_VALUE));
        r = rank;
      }
      capacity.check(null, false);
      return new PermuteOptions(
          experts, placement, r, capacity.policy(capacity.capacity()), capacity.align());
    }
  }

  /** {@code moeprep-kernels unpermute}. */
  @Command(
      name = "unpermute",
      header = "combine expert-output rows back into tokens",
      customSynopsis = {
        "moeprep-kernels unpermute --expert-out X.npy --row-id-map DIR/row_id_map.npy"
            + " [--probs P.npy]",
        "    [--dtype f32|bf16|f16] [--backend auto|cpu|cuda] --out OUT.npy [--force]"
      },
      description = {
        "Writes OUT.npy [N, H]: out[t] = sum over the slots k of token t with a row of",
        "probs[t][k] (1 without --probs) * expert_out[row], accumulated in float32 and rounded",
        "to the dtype. OUT.npy appears only when complete."
      })
  static final class Unpermute implements KernelCommand {
    @Option(
        names = "--expert-out",
        paramLabel = "X.npy",
        required = true,
        description = "expert-output rows [numOut, H]")
    Path expertOut;

    @Option(
        names = "--row-id-map",
        paramLabel = "DIR/row_id_map.npy",
        required = true,
        description = "int32 [N, K] from permute")
    Path rowIdMap;

    @Option(names = "--probs", paramLabel = "P.npy", description = "float32 weights [N, K]")
    Path probs;

    @Option(
        names = "--dtype",
        paramLabel = "D",
        converter = DTypeOption.class,
        description = "element type (default: from the .npy dtype)")
    DType dtype;

    @Option(names = "--backend", paramLabel = "B", description = "auto, cpu or cuda (default auto)")
    BackendChoice backend = BackendChoice.AUTO;

    @Option(names = "--out", paramLabel = "OUT.npy", required = true, description = "output file")
    Path out;

    @Option(names = "--force", description = "replace OUT.npy if it exists")
    boolean force;

    @Mixin HelpOption help;

    @Override
    public void run(PrintStream stdout) throws IOException {
      MoeKernels kernels =
          prepare(
              backend,
              out,
              force,
              "--expert-out",
              expertOut,
              "--row-id-map",
              rowIdMap,
              "--probs",
              probs);
      try (Npy.Array x = Npy.read(expertOut);
          Npy.Array map = Npy.read(rowIdMap);
          Npy.Array probs = this.probs == null ? null : Npy.read(this.probs)) {
        requireRank(x, 2, "--expert-out", "[numOut, H]");
        requireRank(map, 2, "--row-id-map", "[N, K]");
        requireDescr(map, "<i4", "--row-id-map");
        DType dtype = dtypeOf(x, this.dtype);
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
                x.data(),
                x.dim(0),
                map.data(),
                n,
                k,
                h,
                dtype,
                probs == null ? null : probs.data());
        try (HostBuffer result = kernels.unpermute(in)) {
          writeAtomically(out, force, tmp -> Npy.write(tmp, x.descr(), new long[] {n, h}, result));
          stdout.printf(
              "combined %d rows into %d tokens (%s, backend %s) -> %s%n",
              x.dim(0), n, dtype.cliName(), kernels.backend().name(), out);
        }
      }
    }
  }

  /**
   * What a command checks before it reads any array: its input files ({@code option, path} pairs; a
   * null path is an option not given) exist, its output does not (unless {@code force}), and the
   * backend can run.
   */
  private static MoeKernels prepare(
      BackendChoice backend, Path out, boolean force, Object... optionPaths) {
    for (int i = 0; i < optionPaths.length; i += 2) {
      Path p = (Path) optionPaths[i + 1];
      if (p != null && !Files.isRegularFile(p)) {
        throw new IllegalArgumentException(
            optionPaths[i]
                + " "
                + p
                + (Files.exists(p) ? " is not a file" : " does not exist")
                + ": fix "
                + optionPaths[i]);
      }
    }
    checkOutput(out, force);
    try {
      return MoeKernels.create(backend);
    } catch (IllegalStateException e) {
      // only CUDA fails to be chosen: an unusable GPU is an unavailable resource (exit code 2)
      throw new MoePrepCommandLine.Unavailable(
          e.getMessage() + ": use --backend cpu (or auto, the GPU when there is one)", e);
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

  private static DType dtypeOf(Npy.Array a, DType d) {
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
  private static void writeAtomically(Path dest, boolean force, Writer writer) throws IOException {
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
      if (force) {
        deleteTree(dest);
      }
      Files.move(tmp, dest, StandardCopyOption.ATOMIC_MOVE);
    } catch (IOException | RuntimeException e) {
      deleteTree(tmp);
      throw e;
    }
  }

  private static void checkOutput(Path dest, boolean force) {
    if (Files.exists(dest) && !force) {
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
