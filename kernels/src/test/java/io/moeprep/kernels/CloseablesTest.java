package io.moeprep.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.memory.Closeables;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class CloseablesTest {
  /** A resource that records its close and may fail it. */
  static final class Res implements AutoCloseable {
    final String name;
    final List<String> closed;
    final boolean fail;

    Res(String name, List<String> closed, boolean fail) {
      this.name = name;
      this.closed = closed;
      this.fail = fail;
    }

    @Override
    public void close() {
      closed.add(name);
      if (fail) {
        throw new IllegalStateException("close " + name);
      }
    }
  }

  @Test
  void closeOnExceptKeepsTheResourceOnSuccessAndClosesItOnFailure() {
    List<String> closed = new ArrayList<>();
    Res a = new Res("a", closed, true);
    assertEquals("ok a", Closeables.closeOnExcept(a, r -> "ok " + r.name));
    assertTrue(closed.isEmpty());
    IllegalArgumentException boom =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Closeables.closeOnExcept(
                    a,
                    r -> {
                      throw new IllegalArgumentException("boom");
                    }));
    assertEquals(List.of("a"), closed);
    assertEquals("close a", boom.getSuppressed()[0].getMessage());
  }

  @Test
  void closeOnExceptOfSeveralClosesEachOnceOnFailure() {
    List<String> closed = new ArrayList<>();
    Res a = new Res("a", closed, false);
    Res b = new Res("b", closed, true);
    RuntimeException boom = new RuntimeException("boom");
    assertSame(
        boom,
        assertThrows(
            RuntimeException.class,
            () ->
                Closeables.closeOnExcept(
                    () -> {
                      throw boom;
                    },
                    a,
                    null,
                    b)));
    assertEquals(List.of("a", "b"), closed);
    assertEquals(1, boom.getSuppressed().length);
  }

  @Test
  void closeAllTriesEveryResourceAndThrowsTheFirstFailure() {
    List<String> closed = new ArrayList<>();
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () ->
                Closeables.closeAll(
                    new Res("a", closed, true),
                    null,
                    new Res("b", closed, false),
                    new Res("c", closed, true)));
    assertEquals(List.of("a", "b", "c"), closed);
    assertEquals("close a", e.getMessage());
    assertEquals("close c", e.getSuppressed()[0].getMessage());
    Closeables.closeAll();
    assertFalse(closed.contains("d"));
  }

  @Test
  void aScopeClosesWhatItTookLastFirstAndSuppressesIntoAFailure() {
    List<String> closed = new ArrayList<>();
    try (Closeables.Scope scope = new Closeables.Scope()) {
      scope.own(new Res("a", closed, false));
      assertSame(null, scope.own((AutoCloseable) null));
      scope.own(new Res("b", closed, false));
    }
    assertEquals(List.of("b", "a"), closed);

    closed.clear();
    IllegalArgumentException body = new IllegalArgumentException("body");
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> {
              try (Closeables.Scope scope = new Closeables.Scope()) {
                scope.own(new Res("a", closed, true));
                scope.own(new Res("b", closed, true));
                throw body;
              }
            });
    assertSame(body, e);
    assertEquals(List.of("b", "a"), closed, "every resource tried");
    assertEquals(1, e.getSuppressed().length);
    assertEquals("close b", e.getSuppressed()[0].getMessage());
    assertEquals("close a", e.getSuppressed()[0].getSuppressed()[0].getMessage());

    closed.clear();
    IllegalStateException c =
        assertThrows(
            IllegalStateException.class,
            () -> {
              try (Closeables.Scope scope = new Closeables.Scope()) {
                scope.own(new Res("a", closed, true));
              }
            });
    assertEquals("close a", c.getMessage(), "a close failure after a clean block is thrown");
  }
}
