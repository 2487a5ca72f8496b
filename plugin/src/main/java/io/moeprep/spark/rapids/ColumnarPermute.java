package io.moeprep.spark.rapids;

import static org.apache.spark.sql.functions.call_function;
import static org.apache.spark.sql.functions.call_udf;
import static org.apache.spark.sql.functions.coalesce;
import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.collect_list;
import static org.apache.spark.sql.functions.explode;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.struct;

import io.moeprep.spark.exec.BatchCounters;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.io.Serializable;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.api.java.UDF2;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import scala.collection.Seq;

/**
 * The columnar device pipeline of a permute's {@code ROWS} output (issue #13's route under the
 * RAPIDS Accelerator): the whole plan is SQL that RAPIDS runs on the GPU, with MoePrep's permute as
 * one columnar UDF in it.
 *
 * <pre>
 * tokens (token_id, hidden, expert_ids, probs, batch)
 *   groupBy(batch).agg(collect_list(struct(token_id, hidden, expert_ids, probs)) AS tokens)
 *   select(batch, explode(moeprep_permute_rows(batch, tokens)) AS r)      -- the permute
 *   select(r.ep_rank, batch, r.row, r.expert, ..., r.hidden)              -- Schemas.ROWS
 * </pre>
 *
 * Each batch crosses one shuffle (RAPIDS' own, on device batches) to the task that collects it; the
 * UDF permutes it for every rank. Under RAPIDS the UDF's columnar form ({@code
 * com.nvidia.spark.RapidsUDF#evaluateColumnar}, {@link CudfColumnarRows}) reads the collected
 * hidden rows where they lie in device memory and returns the permuted rows as a device column; the
 * scan, the aggregation, the explode and the Parquet writer are RAPIDS' own operators, so the
 * hidden column never becomes rows on the host. Without RAPIDS (or in {@code explainOnly}) Spark
 * calls the row form ({@link PermuteRowsUdf}), which runs the row route's steps on the batch: the
 * same bytes.
 *
 * <p>RAPIDS' interface lives in its 1 GB jar, which MoePrep neither bundles nor links: the UDF
 * given to a RAPIDS session is a {@link Proxy} implementing {@code UDF2} and {@code RapidsUDF},
 * made with the class loader that holds RAPIDS (as {@code ColumnarRdd} is reached by reflection).
 */
public final class ColumnarPermute {
  private ColumnarPermute() {}

  /** The fully qualified name of RAPIDS' columnar UDF interface. */
  public static final String RAPIDS_UDF = "com.nvidia.spark.RapidsUDF";

  /** The UDF's name prefix in the session's function registry. */
  public static final String UDF_NAME = "moeprep_permute_rows";

  /** One output row of the UDF: {@link Schemas#ROWS} without {@code batch}. */
  public static final StructType ROW = withoutBatch(Schemas.ROWS);

  private static final AtomicLong NEXT_ID = new AtomicLong();

  /**
   * Why {@code selected} (the permute's input as {@code token_id, hidden, expert_ids, probs,
   * batch}) cannot take the columnar route, or null when it can: it needs binary hidden rows and
   * int expert ids.
   */
  public static String unsupported(StructType selected) {
    if (selected.apply(1).dataType() != DataTypes.BinaryType) {
      return "hidden is " + selected.apply(1).dataType().simpleString() + ", not binary";
    }
    if (!(selected.apply(2).dataType() instanceof ArrayType a
        && a.elementType() == DataTypes.IntegerType)) {
      return "expert_ids is " + selected.apply(2).dataType().simpleString() + ", not array<int>";
    }
    return null;
  }

  /**
   * The {@link Schemas#ROWS} output of a permute as the columnar plan.
   *
   * @param selected the input as {@code token_id, hidden, expert_ids, probs, batch} (see {@link
   *     #unsupported})
   * @param hasBatch whether {@code batch} is the input's own column; else the batch of a token is
   *     {@code token_id / tokensPerBatch}, as on the row route
   * @param spec the resolved spec
   * @param hasProbs whether the input has probs
   * @param counters the permute's counters, or null
   * @param columnar whether to give the UDF its columnar form (a session with RAPIDS loaded)
   */
  public static Dataset<Row> rows(
      Dataset<Row> selected,
      boolean hasBatch,
      PermuteSpec spec,
      boolean hasProbs,
      BatchCounters counters,
      boolean columnar) {
    String[] in = selected.columns();
    PermuteRowsUdf rows =
        new PermuteRowsUdf(
            spec.toBuilder().partitioning(io.moeprep.spark.spec.Partitioning.BATCH).build(),
            hasProbs,
            counters);
    UDF2<Long, Seq<Row>, List<Row>> udf = columnar ? withColumnarForm(rows) : rows;
    String name = UDF_NAME + "_" + NEXT_ID.getAndIncrement();
    selected.sparkSession().udf().register(name, udf, DataTypes.createArrayType(ROW, false));
    Column tokenId = col(in[0]);
    // token_id div tokensPerBatch truncates as the row route's Java division; coalesce keeps the
    // column non-null, as in Schemas.ROWS (the division by a positive constant is never null)
    Column batch =
        hasBatch
            ? col(in[4])
            : coalesce(
                call_function("div", tokenId, lit((long) spec.shape().tokensPerBatch())), lit(0L));
    Dataset<Row> collected =
        selected
            .groupBy(batch.as("batch"))
            .agg(collect_list(struct(col(in[0]), col(in[1]), col(in[2]), col(in[3]))).as("tokens"));
    Dataset<Row> exploded =
        collected.select(
            col("batch"), explode(call_udf(name, col("batch"), col("tokens"))).as("r"));
    List<Column> out = new ArrayList<>();
    for (StructField f : Schemas.ROWS.fields()) {
      out.add(f.name().equals("batch") ? col("batch") : col("r." + f.name()).as(f.name()));
    }
    return exploded.select(out.toArray(new Column[0]));
  }

  /**
   * {@code rows} with its columnar form: a proxy implementing {@code UDF2} and {@code RapidsUDF},
   * from the context class loader (which holds RAPIDS in a RAPIDS session).
   */
  @SuppressWarnings("unchecked")
  static UDF2<Long, Seq<Row>, List<Row>> withColumnarForm(PermuteRowsUdf rows) {
    ClassLoader cl = Thread.currentThread().getContextClassLoader();
    if (cl == null) {
      cl = ColumnarPermute.class.getClassLoader();
    }
    Class<?> rapidsUdf;
    try {
      rapidsUdf = Class.forName(RAPIDS_UDF, false, cl);
    } catch (ClassNotFoundException e) {
      throw new IllegalStateException(
          RAPIDS_UDF + " is not loadable: the columnar route needs the RAPIDS Accelerator jar", e);
    }
    return (UDF2<Long, Seq<Row>, List<Row>>)
        Proxy.newProxyInstance(cl, new Class<?>[] {UDF2.class, rapidsUdf}, new Forms(rows));
  }

  /** The two forms behind the proxy: {@code call} on rows, {@code evaluateColumnar} on cudf. */
  private static final class Forms implements InvocationHandler, Serializable {
    private static final long serialVersionUID = 1L;
    private final PermuteRowsUdf rows;

    Forms(PermuteRowsUdf rows) {
      this.rows = rows;
    }

    @Override
    @SuppressWarnings("unchecked")
    public Object invoke(Object proxy, Method m, Object[] args) {
      switch (m.getName()) {
        case "call":
          return rows.call((Long) args[0], (Seq<Row>) args[1]);
        case "evaluateColumnar":
          // (int numRows, ColumnVector... args) or (ColumnVector... args)
          Object[] cols = (Object[]) args[args.length - 1];
          return CudfColumnarRows.evaluate(rows, cols);
        case "equals":
          return proxy == args[0];
        case "hashCode":
          return System.identityHashCode(proxy);
        case "toString":
          return UDF_NAME + "(columnar)";
        default:
          throw new UnsupportedOperationException(m.toString());
      }
    }
  }

  private static StructType withoutBatch(StructType rows) {
    List<StructField> f = new ArrayList<>();
    for (StructField x : rows.fields()) {
      if (!x.name().equals("batch")) {
        f.add(x);
      }
    }
    return new StructType(f.toArray(new StructField[0]));
  }
}
