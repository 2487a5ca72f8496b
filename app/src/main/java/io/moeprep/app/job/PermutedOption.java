package io.moeprep.app.job;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import org.apache.hadoop.conf.Configuration;
import picocli.CommandLine.Option;

/**
 * The {@code --permuted DIR} option of the commands that read the output of {@code moeprep permute}
 * ({@code unpermute}, {@code verify}, {@code stats}; a picocli mixin), and its manifest.
 */
final class PermutedOption {
  @Option(
      names = "--permuted",
      paramLabel = "DIR",
      required = true,
      description = "output directory of moeprep permute (required)")
  String dir;

  /** The permute's {@code manifest.json}, once {@link #readManifest} has read it. */
  ObjectNode manifest;

  /**
   * Checks that the directory exists and reads its {@code manifest.json} into {@link #manifest}.
   *
   * @throws IllegalArgumentException naming {@code --permuted} when either is missing
   */
  void readManifest(Configuration hadoop) throws IOException {
    JobContext.requireExists(hadoop, dir, "--permuted");
    manifest = Json.read(hadoop, dir, PermuteCommand.MANIFEST, "--permuted");
  }

  /**
   * The path of the permute's dataset {@code name} ({@code data}, {@code row_map}, ...): in the
   * generation its manifest names (see {@link OutputDir}).
   */
  String path(String name) {
    return OutputDir.datasetPath(dir, manifest, name);
  }
}
