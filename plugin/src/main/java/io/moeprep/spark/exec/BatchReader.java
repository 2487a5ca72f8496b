package io.moeprep.spark.exec;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.sql.Row;

/**
 * Cuts a partition sorted by (batch, ...) into batches, one at a time, so that a task holds one
 * batch in memory, never its whole partition.
 */
final class BatchReader {
  private final Iterator<Row> in;
  private final int batchField;
  private Row pending;

  BatchReader(Iterator<Row> in, int batchField) {
    this.in = in;
    this.batchField = batchField;
  }

  boolean hasNext() {
    return pending != null || in.hasNext();
  }

  /** The rows of the next batch, in partition order. */
  List<Row> next() {
    List<Row> rows = new ArrayList<>();
    Row first = pending != null ? pending : in.next();
    pending = null;
    rows.add(first);
    long batch = first.getLong(batchField);
    while (in.hasNext()) {
      Row r = in.next();
      if (r.getLong(batchField) != batch) {
        pending = r;
        break;
      }
      rows.add(r);
    }
    return rows;
  }
}
