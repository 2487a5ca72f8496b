package io.moeprep.kernels.memory;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * The one way MoePrep closes resources outside a try-with-resources block: {@link #closeOnExcept}
 * for a resource that must be closed only when the code that takes it over fails, {@link #closeAll}
 * for several resources closed together, and a {@link Scope} for resources taken one by one in a
 * block and closed when it ends. Failures of {@code close()} are added to the first failure as
 * suppressed exceptions, never lost and never hiding it.
 */
public final class Closeables {
  private Closeables() {}

  /**
   * Runs {@code body} with {@code resource} and returns its result; if {@code body} throws, closes
   * {@code resource} (its own failure suppressed into the thrown one) and rethrows. On success the
   * resource stays open: the result owns it.
   */
  public static <R extends AutoCloseable, T> T closeOnExcept(R resource, Function<R, T> body) {
    try {
      return body.apply(resource);
    } catch (Throwable t) {
      closeSuppressed(resource, t);
      throw t;
    }
  }

  /**
   * Builds a value from {@code body}; if it throws, closes every resource in {@code resources}
   * (nulls skipped, failures suppressed into the thrown one) and rethrows.
   */
  public static <T> T closeOnExcept(Supplier<T> body, AutoCloseable... resources) {
    try {
      return body.get();
    } catch (Throwable t) {
      for (AutoCloseable r : resources) {
        closeSuppressed(r, t);
      }
      throw t;
    }
  }

  /**
   * Closes every resource in order (nulls skipped), even when one fails; the first failure is
   * thrown after all were tried, the later ones suppressed into it. Checked failures are wrapped in
   * an {@link IllegalStateException}.
   */
  public static void closeAll(AutoCloseable... resources) {
    Throwable first = null;
    for (AutoCloseable r : resources) {
      if (r == null) {
        continue;
      }
      try {
        r.close();
      } catch (Throwable t) {
        if (first == null) {
          first = t;
        } else {
          first.addSuppressed(t);
        }
      }
    }
    if (first instanceof RuntimeException e) {
      throw e;
    }
    if (first instanceof Error e) {
      throw e;
    }
    if (first != null) {
      throw new IllegalStateException("closing failed: " + first.getMessage(), first);
    }
  }

  /**
   * Resources taken one by one in a try-with-resources block and closed together when it ends, the
   * last taken first, even when one fails (see {@link #closeAll}). On a failure inside the block,
   * their close failures are suppressed into it, as try-with-resources does.
   *
   * <pre>{@code
   * try (Closeables.Scope scope = new Closeables.Scope()) {
   *   DeviceBuffer a = scope.own(DeviceBuffer.allocate(device, bytes));
   *   ...
   * }
   * }</pre>
   */
  public static final class Scope implements AutoCloseable {
    private final List<AutoCloseable> owned = new ArrayList<>();

    /** Takes {@code resource} (null is ignored) and returns it. */
    public <T extends AutoCloseable> T own(T resource) {
      if (resource != null) {
        owned.add(resource);
      }
      return resource;
    }

    /** Closes what was taken, the last first; the scope is empty afterwards. */
    @Override
    public void close() {
      List<AutoCloseable> reversed = new ArrayList<>(owned);
      owned.clear();
      Collections.reverse(reversed);
      closeAll(reversed.toArray(new AutoCloseable[0]));
    }
  }

  /** Closes {@code resource} (if not null), adding any failure to {@code primary}. */
  public static void closeSuppressed(AutoCloseable resource, Throwable primary) {
    if (resource == null) {
      return;
    }
    try {
      resource.close();
    } catch (Throwable t) {
      if (t != primary) {
        primary.addSuppressed(t);
      }
    }
  }
}
