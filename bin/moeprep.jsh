// Start-up of `bin/moeprep jshell`: MoePrep's API and a local Spark session named `spark`
// (with the plugin and the SQL functions). Try:
//   var tokens = spark.read().parquet("moeprep-out/tokens");
//   var spec = PermuteSpec.builder(16, 4).hidden(256, DType.BF16).topK(4).build();
//   MoePrep.permute(tokens, spec).tokensPerExpert().show();
import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.spark.api.*;
import io.moeprep.spark.spec.*;
import org.apache.spark.sql.*;
SparkSession spark = SparkSession.builder().master(System.getProperty("spark.master", "local[*]")).appName("moeprep-jshell").config("spark.plugins", "io.moeprep.spark.MoePrepPlugin").config("spark.sql.extensions", "io.moeprep.spark.MoePrepExtensions").getOrCreate();
