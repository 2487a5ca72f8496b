package io.moeprep.app.cli;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.stream.Collectors;
import picocli.CommandLine;
import picocli.CommandLine.Help;
import picocli.CommandLine.Help.Ansi;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Model.UsageMessageSpec;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.UnmatchedArgumentException;

/**
 * The conventions that MoePrep's two command lines share ({@code bin/moeprep}, {@code
 * bin/moeprep-kernels}): picocli parses the typed options declared on the command classes; this
 * class prints their help and turns every way a run can end into an exit code, with one line on
 * stderr in the user's words:
 *
 * <ul>
 *   <li>{@value #OK}: done, or help printed;
 *   <li>{@value #BAD_INPUT}: a usage error (unknown option or command, missing or malformed value),
 *       bad input (an {@link IllegalArgumentException} anywhere in the cause chain, a file that
 *       does not exist or cannot be read) or an unavailable resource ({@link Unavailable}, out of
 *       memory): {@code PROGRAM [COMMAND]: error: MESSAGE};
 *   <li>{@value #FAILED}: anything else, an internal failure: {@code PROGRAM [COMMAND]: failed:
 *       MESSAGE (MOEPREP_VERBOSE=1 shows more)}.
 * </ul>
 *
 * <p>Exception class names appear only with {@code MOEPREP_VERBOSE=1}, which adds the stack trace.
 */
public final class MoePrepCommandLine {
  /** Exit code: done. */
  public static final int OK = 0;

  /** Exit code: an internal failure (or, for the job's verify, a mismatch). */
  public static final int FAILED = 1;

  /** Exit code: a usage error, bad input or an unavailable resource. */
  public static final int BAD_INPUT = 2;

  /** A resource that a command needs is unavailable (a GPU, a Spark session): exit code 2. */
  public static final class Unavailable extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** {@code message}: what is unavailable and why, in the user's words. */
    public Unavailable(String message, Throwable cause) {
      super(message, cause);
    }
  }

  /** What runs once the command line is parsed and no help was asked for. */
  @FunctionalInterface
  public interface Action {
    /**
     * Runs the chosen command, whose options picocli has set on {@code command.userObject()}.
     *
     * @return the exit code
     */
    int run(CommandSpec command) throws Exception;
  }

  private final CommandLine commandLine;
  private final PrintStream out;
  private final PrintStream err;
  private final boolean subcommandInPrefix;
  private final boolean verbose;

  /**
   * The options declared {@code required}: this class checks them once the whole command line is
   * parsed, so that a stray argument or an unknown option is reported first.
   */
  private final Set<OptionSpec> required = Collections.newSetFromMap(new IdentityHashMap<>());

  /**
   * A command line for {@code command}, a picocli {@code @Command} object (its subcommands
   * included; a hidden {@code help} subcommand is added where it has any).
   *
   * @param subcommandInPrefix whether error lines name the subcommand ({@code moeprep permute:
   *     error: ...}) or the program only ({@code moeprep-kernels: error: ...})
   * @param verbose whether failures print their stack trace (see {@link #verboseFromEnvironment})
   */
  public MoePrepCommandLine(
      Object command,
      PrintStream out,
      PrintStream err,
      boolean subcommandInPrefix,
      boolean verbose) {
    this.out = out;
    this.err = err;
    this.subcommandInPrefix = subcommandInPrefix;
    this.verbose = verbose;
    CommandLine cl = new CommandLine(command);
    if (!cl.getSubcommands().isEmpty()) {
      cl.addSubcommand("help", new CommandLine.HelpCommand());
      cl.getSubcommands().get("help").getCommandSpec().usageMessage().hidden(true);
    }
    cl.setOut(new PrintWriter(out, true, StandardCharsets.UTF_8));
    cl.setErr(new PrintWriter(err, true, StandardCharsets.UTF_8));
    cl.setExpandAtFiles(false);
    cl.setOverwrittenOptionsAllowed(true); // the last value given wins
    cl.setCaseInsensitiveEnumValuesAllowed(true);
    cl.setUnmatchedOptionsAllowedAsOptionParameters(false);
    cl.setColorScheme(Help.defaultColorScheme(Ansi.OFF));
    cl.setUsageHelpWidth(110);
    cl.setUsageHelpLongOptionsMaxWidth(26);
    cl.setHelpFactory(SpaceSeparatedHelp::new);
    prepare(cl);
    this.commandLine = cl;
  }

  /** True when the environment asks for stack traces ({@code MOEPREP_VERBOSE=1}). */
  public static boolean verboseFromEnvironment() {
    return "1".equals(System.getenv("MOEPREP_VERBOSE"));
  }

  /**
   * Parses {@code args}; prints the help asked for, or runs {@code action} on the chosen command.
   * Never throws: every failure becomes its line on stderr and its exit code.
   *
   * @return the exit code
   */
  public int execute(String[] args, Action action) {
    ParseResult parsed;
    try {
      parsed = commandLine.parseArgs(args);
      if (CommandLine.printHelpIfRequested(parsed)) {
        out.flush();
        return OK;
      }
    } catch (ParameterException e) {
      err.println(prefix(e.getCommandLine().getCommandSpec()) + ": error: " + describe(e, args));
      return BAD_INPUT;
    }
    ParseResult leaf = parsed;
    while (leaf.hasSubcommand()) {
      leaf = leaf.subcommand();
    }
    CommandSpec spec = leaf.commandSpec();
    if (!spec.subcommands().isEmpty()) {
      err.print(spec.commandLine().getUsageMessage()); // a command is missing
      return BAD_INPUT;
    }
    for (OptionSpec o : spec.options()) {
      if (required.contains(o) && !leaf.hasMatchedOption(o)) {
        err.println(prefix(spec) + ": error: " + missing(o));
        return BAD_INPUT;
      }
    }
    try {
      return action.run(spec);
    } catch (Throwable t) {
      return report(prefix(spec), t);
    }
  }

  /**
   * Reports a failure of a running command: one line, then the stack trace when verbose.
   *
   * @return its exit code
   */
  int report(String prefix, Throwable t) {
    String bad = userMessage(t);
    if (bad != null) {
      err.println(prefix + ": error: " + bad);
    } else {
      String m = deepestMessage(t);
      err.println(
          prefix
              + ": failed: "
              + (m.isEmpty() ? "an internal error with no message" : m)
              + (verbose ? "" : " (MOEPREP_VERBOSE=1 shows more)"));
    }
    if (verbose) {
      t.printStackTrace(err);
    }
    err.flush();
    return bad != null ? BAD_INPUT : FAILED;
  }

  /**
   * The first caller-input error in the cause chain (Spark and picocli wrap them), or null: an
   * {@link IllegalArgumentException} (a {@link NumberFormatException} only when nothing else in the
   * chain is: a number that fails to parse deep inside is not the user's option).
   */
  public static IllegalArgumentException badInput(Throwable t) {
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      if (c instanceof IllegalArgumentException e && !(e instanceof NumberFormatException)) {
        return e;
      }
    }
    return null;
  }

  /**
   * The message of {@code t} when it is the user's to fix (bad input, an unavailable resource), in
   * their words; null for an internal failure.
   */
  static String userMessage(Throwable t) {
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      if (c instanceof Unavailable u) {
        return firstLine(u.getMessage());
      }
    }
    IllegalArgumentException bad = badInput(t);
    if (bad != null) {
      return firstLine(bad.getMessage());
    }
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      if (c instanceof NoSuchFileException e) {
        return e.getFile() + " does not exist";
      } else if (c instanceof AccessDeniedException e) {
        return e.getFile() + " cannot be accessed: permission denied";
      } else if (c instanceof FileAlreadyExistsException e) {
        return e.getFile() + " already exists";
      } else if (c instanceof NotDirectoryException e) {
        return e.getFile() + " is not a directory";
      } else if (c instanceof OutOfMemoryError) {
        return "out of memory: give the JVM more (JAVA_OPTS=-Xmx...) or the job less data";
      }
    }
    return null;
  }

  /** The first line of {@code m} ("" for null). */
  public static String firstLine(String m) {
    if (m == null) {
      return "";
    }
    int nl = m.indexOf('\n');
    return (nl < 0 ? m : m.substring(0, nl)).strip();
  }

  /** The first line of the message deepest in the cause chain (the root cause's, mostly). */
  private static String deepestMessage(Throwable t) {
    String m = null;
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      if (c.getMessage() != null && !c.getMessage().isBlank()) {
        m = c.getMessage();
      }
    }
    return firstLine(m);
  }

  private String prefix(CommandSpec spec) {
    return subcommandInPrefix ? spec.qualifiedName(" ") : spec.root().name();
  }

  /** A usage error in the user's words, naming the option to fix. */
  static String describe(ParameterException e, String[] args) {
    CommandSpec spec = e.getCommandLine().getCommandSpec();
    if (e instanceof UnmatchedArgumentException u && !u.getUnmatched().isEmpty()) {
      String arg = u.getUnmatched().get(0);
      if (arg.startsWith("-")) {
        String name = arg.contains("=") ? arg.substring(0, arg.indexOf('=')) : arg;
        return "option "
            + name
            + " is unknown to '"
            + spec.name()
            + "': valid options are "
            + spec.options().stream()
                .filter(o -> !o.hidden())
                .map(OptionSpec::longestName)
                .sorted()
                .collect(Collectors.joining(", "));
      }
      if (!spec.subcommands().isEmpty()) {
        return "command '"
            + arg
            + "' is unknown: must be one of "
            + String.join(", ", visibleSubcommands(spec))
            + " (see "
            + spec.qualifiedName(" ")
            + " --help)";
      }
      return "argument '" + arg + "' is unexpected: options start with -- (see --help)";
    }
    if (e instanceof CommandLine.MissingParameterException m && !m.getMissing().isEmpty()) {
      ArgSpec a = m.getMissing().get(0);
      if (a instanceof OptionSpec o) {
        String name = o.longestName();
        boolean given =
            Arrays.stream(args).anyMatch(x -> Arrays.stream(o.names()).anyMatch(n -> x.equals(n)));
        return given ? "option " + name + " needs a value" : missing(o);
      }
    }
    ArgSpec a = e.getArgSpec();
    if (a instanceof OptionSpec o && e.getValue() != null && e.getCause() != null) {
      return o.longestName() + " '" + e.getValue() + "' is invalid: " + expectation(o, e);
    }
    return firstLine(e.getMessage());
  }

  private static String missing(OptionSpec o) {
    return "option "
        + o.longestName()
        + " is missing: give "
        + o.longestName()
        + " "
        + o.paramLabel();
  }

  /** What a value of {@code o} must be, for a value that did not convert. */
  private static String expectation(OptionSpec o, ParameterException e) {
    Class<?> t = o.type();
    if (o.converters().length > 0) {
      // a converter of ours: its message says what the value must be
      String m = firstLine(e.getCause().getMessage());
      int at = m.indexOf(": must be");
      return at >= 0 ? m.substring(at + 2) : m;
    } else if (t == int.class || t == Integer.class) {
      return "must be an integer in [" + Integer.MIN_VALUE + ", " + Integer.MAX_VALUE + "]";
    } else if (t == long.class || t == Long.class) {
      return "must be an integer";
    } else if (t == double.class || t == Double.class || t == float.class || t == Float.class) {
      return "must be a number";
    } else if (t.isEnum()) {
      List<String> names = new ArrayList<>();
      for (Object c : t.getEnumConstants()) {
        names.add(((Enum<?>) c).name().toLowerCase(Locale.ROOT));
      }
      return "must be one of " + String.join(", ", names);
    }
    return "must be a " + t.getSimpleName().toLowerCase(Locale.ROOT);
  }

  private static List<String> visibleSubcommands(CommandSpec spec) {
    List<String> names = new ArrayList<>();
    spec.subcommands()
        .forEach(
            (name, sub) -> {
              if (!sub.getCommandSpec().usageMessage().hidden()) {
                names.add(name);
              }
            });
    return names;
  }

  /**
   * Prepares every command: MoePrep's help layout (headings, options in declaration order), and its
   * required options taken over (see {@link #required}).
   */
  private void prepare(CommandLine cl) {
    CommandSpec spec = cl.getCommandSpec();
    if (spec.options().stream().anyMatch(OptionSpec::required)) {
      List<OptionSpec> all = new ArrayList<>(spec.options());
      all.forEach(spec::remove);
      for (OptionSpec o : all) {
        OptionSpec kept = o.required() ? o.toBuilder().required(false).build() : o;
        if (o.required()) {
          required.add(kept);
        }
        spec.addOption(kept);
      }
    }
    UsageMessageSpec u = spec.usageMessage();
    u.synopsisHeading("usage: ")
        .descriptionHeading("%n")
        .optionListHeading("%noptions:%n")
        .commandListHeading("%ncommands:%n")
        .footerHeading("%n")
        .sortOptions(false)
        .sortSynopsis(false);
    // the header is the one-line summary in the parent's command list, not part of the own help
    List<String> keys = new ArrayList<>(u.sectionKeys());
    keys.remove(UsageMessageSpec.SECTION_KEY_HEADER_HEADING);
    keys.remove(UsageMessageSpec.SECTION_KEY_HEADER);
    u.sectionKeys(keys);
    cl.getSubcommands().values().forEach(this::prepare);
  }

  /**
   * Help that shows options as {@code --out DIR}, as the docs do ({@code --out=DIR} parses too).
   */
  private static final class SpaceSeparatedHelp extends Help {
    SpaceSeparatedHelp(CommandSpec spec, Help.ColorScheme scheme) {
      super(spec, scheme);
    }

    @Override
    public IParamLabelRenderer parameterLabelRenderer() {
      IParamLabelRenderer labels = super.parameterLabelRenderer();
      return new IParamLabelRenderer() {
        @Override
        public Ansi.Text renderParameterLabel(ArgSpec arg, Ansi ansi, List<Ansi.IStyle> styles) {
          Ansi.Text t = labels.renderParameterLabel(arg, ansi, styles);
          String sep = labels.separator();
          return t.plainString().startsWith(sep)
              ? ansi.new Text(" ", colorScheme()).concat(t.substring(sep.length()))
              : t;
        }

        @Override
        public String separator() {
          return " ";
        }
      };
    }
  }
}
