package io.moeprep.spark.exec;

import io.moeprep.spark.spec.PermuteSpec;
import java.util.Iterator;
import java.util.NoSuchElementException;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;

/**
 * Emits one {@link io.moeprep.spark.spec.Schemas#BAD_ROWS} row (token_id, batch, reason) per input
 * row that fails the same validation as {@link DispatchMapper}: the side table of the skip policy.
 */
public final class BadRowScanner implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final boolean hasBatch;

  /**
   * @param hasProbs whether the input has a probs column
   * @param hasBatch whether the input has a batch column
   */
  public BadRowScanner(PermuteSpec spec, boolean hasProbs, boolean hasBatch) {
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.hasBatch = hasBatch;
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    return new Iterator<>() {
      private Row next;

      @Override
      public boolean hasNext() {
        while (next == null && in.hasNext()) {
          Row r = in.next();
          try {
            TokenRows.parse(r, spec.shape(), hasProbs, hasBatch);
          } catch (IllegalArgumentException e) {
            next = TokenRows.badRow(r, spec.shape(), hasBatch, e);
          }
        }
        return next != null;
      }

      @Override
      public Row next() {
        if (!hasNext()) {
          throw new NoSuchElementException();
        }
        Row r = next;
        next = null;
        return r;
      }
    };
  }
}
