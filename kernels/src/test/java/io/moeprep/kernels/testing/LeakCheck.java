package io.moeprep.kernels.testing;

import io.moeprep.kernels.memory.HostBuffer;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Fails a test that leaves host buffers open: {@code @ExtendWith(LeakCheck.class)}. Compares the
 * live buffer count and bytes in use before and after each test.
 */
public final class LeakCheck implements BeforeEachCallback, AfterEachCallback {
  private static final ExtensionContext.Namespace NS =
      ExtensionContext.Namespace.create(LeakCheck.class);

  @Override
  public void beforeEach(ExtensionContext ctx) {
    ctx.getStore(NS).put("live", HostBuffer.liveBuffers());
    ctx.getStore(NS).put("bytes", HostBuffer.bytesInUse());
  }

  @Override
  public void afterEach(ExtensionContext ctx) {
    long live = ctx.getStore(NS).get("live", Long.class);
    long bytes = ctx.getStore(NS).get("bytes", Long.class);
    if (HostBuffer.liveBuffers() != live || HostBuffer.bytesInUse() != bytes) {
      throw new AssertionError(
          "host memory leak in "
              + ctx.getDisplayName()
              + ": live buffers "
              + live
              + " -> "
              + HostBuffer.liveBuffers()
              + ", bytes "
              + bytes
              + " -> "
              + HostBuffer.bytesInUse());
    }
  }
}
