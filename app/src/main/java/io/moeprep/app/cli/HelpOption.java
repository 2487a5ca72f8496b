package io.moeprep.app.cli;

import picocli.CommandLine.Option;

/** The {@code -h, --help} option of every subcommand (a picocli mixin). */
public final class HelpOption {
  @Option(
      names = {"-h", "--help"},
      usageHelp = true,
      description = "show this help and exit")
  boolean help;
}
