package io.moeprep.app.job;

import io.moeprep.app.cli.DTypeOption;
import io.moeprep.app.cli.OptionChecks;
import io.moeprep.kernels.DType;
import picocli.CommandLine.Option;

/**
 * The shape of a generated token table, options that {@code generate} and {@code demo} share (a
 * picocli mixin): one place for their names, defaults and checks.
 */
final class TokenTableOptions {
  @Option(names = "--tokens", paramLabel = "N", description = "tokens (default 4096)")
  long tokens = 4096;

  @Option(names = "--hidden", paramLabel = "H", description = "elements per token (default 256)")
  int hidden = 256;

  @Option(
      names = "--dtype",
      paramLabel = "D",
      converter = DTypeOption.class,
      description = "f32, bf16, f16, fp8e4m3, fp8e5m2 (default bf16)")
  DType dtype = DType.BF16;

  @Option(names = "--top-k", paramLabel = "K", description = "experts per token (default 4)")
  int topK = 4;

  @Option(
      names = "--tokens-per-batch",
      paramLabel = "T",
      description = "tokens per batch (default 1024)")
  int tokensPerBatch = 1024;

  @Option(
      names = "--skew",
      paramLabel = "S",
      description = "Zipf exponent of expert popularity, 0 = balanced (default 0.5)")
  double skew = 0.5;

  @Option(names = "--seed", paramLabel = "S", description = "random seed (default 42)")
  long seed = 42;

  /** Checks the ranges, naming the option to fix. */
  void validate() {
    OptionChecks.inRange("--tokens", tokens, 0, 1L << 40);
    OptionChecks.inRange("--hidden", hidden, 1, Integer.MAX_VALUE);
    OptionChecks.inRange("--top-k", topK, 1, 1024);
    OptionChecks.inRange("--tokens-per-batch", tokensPerBatch, 1, Integer.MAX_VALUE);
    OptionChecks.inRange("--skew", skew, 0, 100);
    if (dtype.rowBytes(hidden) > Integer.MAX_VALUE - 64) {
      throw new IllegalArgumentException(
          "--hidden " + hidden + " is too large: one token must fit in a Spark binary value");
    }
  }

  /** Batches of the table: {@code ceil(tokens / tokensPerBatch)}. */
  long batches() {
    return (tokens + tokensPerBatch - 1) / tokensPerBatch;
  }
}
