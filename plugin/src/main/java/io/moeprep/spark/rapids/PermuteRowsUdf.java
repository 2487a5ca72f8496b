package io.moeprep.spark.rapids;

import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.exec.DispatchMapper;
import io.moeprep.spark.exec.RankBatchRunner;
import io.moeprep.spark.exec.RankOutput;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;
import scala.collection.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The row form of the columnar permute ({@link ColumnarPermute}): one batch's tokens in, the
 * batch's {@code ROWS} output for every rank out, as an array of {@link ColumnarPermute#ROW}
 * structs. It runs the row route's own steps on that batch ({@link DispatchMapper} then {@link
 * RankBatchRunner}, with the backend of the spec), so its bytes are the row route's by
 * construction. Spark calls it where RAPIDS does not take the columnar form ({@code explainOnly}, a
 * session without RAPIDS).
 */
final class PermuteRowsUdf implements UDF2<Long, Seq<Row>, List<Row>> {
  private static final long serialVersionUID = 1L;

  private final PermuteSpec spec;
  private final boolean hasProbs;
  private final BatchCounters counters;

  /**
   * @param spec the resolved spec, under {@code partitioning=batch}
   * @param hasProbs whether the tokens carry probs
   * @param counters the permute's counters, or null
   */
  PermuteRowsUdf(PermuteSpec spec, boolean hasProbs, BatchCounters counters) {
    this.spec = spec;
    this.hasProbs = hasProbs;
    this.counters = counters;
  }

  PermuteSpec spec() {
    return spec;
  }

  boolean hasProbs() {
    return hasProbs;
  }

  BatchCounters counters() {
    return counters;
  }

  @Override
  public List<Row> call(Long batch, Seq<Row> tokens) {
    Iterator<Row> structs = CollectionConverters.asJava(tokens.iterator());
    Iterator<Row> in =
        new Iterator<>() {
          @Override
          public boolean hasNext() {
            return structs.hasNext();
          }

          @Override
          public Row next() {
            Row t = structs.next();
            return RowFactory.create(t.get(0), t.get(1), t.get(2), t.get(3), batch);
          }
        };
    Iterator<Row> chunks = new DispatchMapper(spec, hasProbs, true, new int[] {0}).call(in);
    Iterator<Row> rows =
        new RankBatchRunner(spec, RankOutput.ROWS, hasProbs, counters).call(chunks);
    List<Row> out = new ArrayList<>();
    while (rows.hasNext()) {
      Row r = rows.next();
      // ROWS without its batch column (field 1), which the plan puts back
      out.add(
          RowFactory.create(
              r.get(0), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8)));
    }
    return out;
  }
}
