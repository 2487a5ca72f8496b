package io.moeprep.spark.sql;

import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.spec.PermuteSpec;
import java.util.Locale;
import java.util.Map;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SQLContext;
import org.apache.spark.sql.sources.BaseRelation;
import org.apache.spark.sql.sources.DataSourceRegister;
import org.apache.spark.sql.sources.RelationProvider;
import org.apache.spark.sql.sources.TableScan;
import org.apache.spark.sql.types.StructType;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Permute and unpermute from SQL or PySpark, without Java code: a data source named {@code moeprep}
 * whose options name the input tables and the {@link PermuteSpec#fromOptions spec}.
 *
 * <pre>
 * CREATE TEMPORARY VIEW permuted USING moeprep
 *   OPTIONS (op 'permute', table 'tokens', output 'packed',
 *            numExperts '64', epSize '8', hidden '1024', dtype 'bf16', topK '8');
 * CREATE TEMPORARY VIEW combined USING moeprep
 *   OPTIONS (op 'unpermute', expertOutputs 'expert_out', rowMap 'row_map',
 *            numExperts '64', epSize '8', hidden '1024', dtype 'bf16', topK '8');
 * </pre>
 *
 * {@code output} is one of {@code data} (the spec's layout, default), {@code rows}, {@code packed},
 * {@code rowMap}, {@code tokensPerExpert}, {@code badRows} (the bad-row side table).
 */
public final class MoePrepSource implements RelationProvider, DataSourceRegister {
  @Override
  public String shortName() {
    return "moeprep";
  }

  @Override
  public BaseRelation createRelation(
      SQLContext sqlContext, scala.collection.immutable.Map<String, String> parameters) {
    Map<String, String> o = CollectionConverters.asJava(parameters);
    String op = option(o, "op", "permute").toLowerCase(Locale.ROOT);
    PermuteSpec spec = PermuteSpec.fromOptions(o);
    Dataset<Row> result;
    switch (op) {
      case "permute" -> {
        PermuteOutput out = MoePrep.permute(sqlContext.table(required(o, "table")), spec);
        String which = option(o, "output", "data").toLowerCase(Locale.ROOT);
        result =
            switch (which) {
              case "data" -> out.data();
              case "rows" -> out.rows();
              case "packed" -> out.packed();
              case "rowmap" -> out.rowMap();
              case "tokensperexpert" -> out.tokensPerExpert();
              case "badrows" -> out.badRows();
              default ->
                  throw new IllegalArgumentException(
                      "output '"
                          + which
                          + "' is invalid: must be one of data, rows, packed, rowMap,"
                          + " tokensPerExpert, badRows");
            };
      }
      case "unpermute" ->
          result =
              MoePrep.unpermute(
                  sqlContext.table(required(o, "expertOutputs")),
                  sqlContext.table(required(o, "rowMap")),
                  spec);
      default ->
          throw new IllegalArgumentException(
              "op '" + op + "' is invalid: must be one of permute, unpermute");
    }
    return new Relation(sqlContext, result);
  }

  private static String option(Map<String, String> o, String key, String def) {
    String v = PermuteSpec.option(o, key);
    return v == null ? def : v;
  }

  private static String required(Map<String, String> o, String key) {
    String v = option(o, key, null);
    if (v == null) {
      throw new IllegalArgumentException("option " + key + " is missing: it is required");
    }
    return v;
  }

  private static final class Relation extends BaseRelation implements TableScan {
    private final SQLContext sqlContext;
    private final Dataset<Row> result;

    Relation(SQLContext sqlContext, Dataset<Row> result) {
      this.sqlContext = sqlContext;
      this.result = result;
    }

    @Override
    public SQLContext sqlContext() {
      return sqlContext;
    }

    @Override
    public StructType schema() {
      return result.schema();
    }

    @Override
    public RDD<Row> buildScan() {
      return result.rdd();
    }
  }
}
