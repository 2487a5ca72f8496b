package io.moeprep.spark.api;

/** Shares the failure helpers of {@link BadRowsTest} with other test packages. */
public final class BadRowsTestAccess {
  private BadRowsTestAccess() {}

  /** Every message of a cause chain. */
  public static String causes(Throwable e) {
    return BadRowsTest.causes(e);
  }
}
