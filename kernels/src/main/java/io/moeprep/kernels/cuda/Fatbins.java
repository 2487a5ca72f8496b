package io.moeprep.kernels.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.util.List;

/**
 * The kernel images: one fatbin per {@code .cu} file of {@code src/main/cuda}, built by nvcc during
 * the Maven build (SASS for sm_80 and sm_90, PTX for newer cards) into this package's resources. No
 * JCuda here, so that checking for them works without a driver.
 */
final class Fatbins {
  /** The modules, one per {@code .cu} file. */
  static final List<String> MODULES = List.of("routing_map", "permute", "unpermute", "chunk_sort");

  private Fatbins() {}

  /** Whether every fatbin was built into this jar. */
  static boolean present() {
    for (String m : MODULES) {
      if (Fatbins.class.getResource(m + ".fatbin") == null) {
        return false;
      }
    }
    return true;
  }

  /** The bytes of one module's fatbin. */
  static byte[] read(String module) {
    try (InputStream in = Fatbins.class.getResourceAsStream(module + ".fatbin")) {
      if (in == null) {
        throw new MoePrepCudaException(
            "this jar has no CUDA kernels (built without nvcc): " + module + ".fatbin is missing",
            (Throwable) null);
      }
      return in.readAllBytes();
    } catch (IOException e) {
      throw new MoePrepCudaException("cannot read " + module + ".fatbin", e);
    }
  }
}
