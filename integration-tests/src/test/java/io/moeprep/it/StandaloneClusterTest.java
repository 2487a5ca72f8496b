package io.moeprep.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.MoePrepExtensions;
import io.moeprep.spark.MoePrepPlugin;
import io.moeprep.spark.api.Layout;
import io.moeprep.spark.api.MoePrep;
import io.moeprep.spark.api.PermuteOutput;
import io.moeprep.spark.api.PermuteSpec;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The same job on a real standalone cluster (a Master and two Workers on 127.0.0.1, started from
 * the Maven classpath) and in local mode gives identical outputs: permuted rows and blocks written
 * to Parquet through Spark's committer, row maps, tokens per expert, and the combine.
 */
class StandaloneClusterTest {
  @TempDir Path dir;

  private static final int N = 3000;
  private static final int H = 24;
  private static final int K = 4;
  private static final int E = 16;
  private static final int R = 4;

  /** Every output of the job, sorted, as comparable strings (binary as hex). */
  private Map<String, List<String>> runJob(SparkSession spark, long seed, String tag) {
    Dataset<Row> tokens = TokenData.generate(spark, seed, N, 5, H, DType.BF16, K, E, 0.2);
    Path in = dir.resolve(tag + "-tokens");
    tokens.write().parquet(in.toString());
    Dataset<Row> input = spark.read().parquet(in.toString());
    Map<String, List<String>> out = new LinkedHashMap<>();
    for (Layout layout : Layout.values()) {
      PermuteSpec spec =
          PermuteSpec.builder(E, R)
              .hidden(H, DType.BF16)
              .topK(K)
              .tokensPerBatch(700)
              .perExpertCapacity(150, false)
              .layout(layout)
              .maxBlockBytes(40L * H * 2)
              .backend(BackendChoice.CPU)
              .build();
      PermuteOutput p = MoePrep.permute(input, spec);
      Path data = dir.resolve(tag + "-" + layout);
      p.data().write().parquet(data.toString());
      Dataset<Row> written = spark.read().parquet(data.toString());
      out.put(layout + " data", sorted(written));
      out.put(layout + " rowMap", sorted(p.rowMap()));
      out.put(layout + " tokensPerExpert", sorted(p.tokensPerExpert()));
      out.put(layout + " combined", sorted(MoePrep.unpermute(written, p.rowMap(), spec)));
    }
    return out;
  }

  private static List<String> sorted(Dataset<Row> d) {
    List<String> rows = new ArrayList<>();
    for (Row r : d.collectAsList()) {
      StringBuilder b = new StringBuilder();
      for (int i = 0; i < r.length(); i++) {
        Object v = r.get(i);
        if (v instanceof byte[] bytes) {
          b.append(java.util.HexFormat.of().formatHex(bytes));
        } else {
          b.append(v);
        }
        b.append('|');
      }
      rows.add(b.toString());
    }
    rows.sort(null);
    return rows;
  }

  private static SparkSession.Builder session(String master) {
    return SparkSession.builder()
        .master(master)
        .appName("moeprep-it")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.plugins", MoePrepPlugin.class.getName())
        .config("spark.sql.extensions", MoePrepExtensions.class.getName());
  }

  @Test
  void clusterOutputEqualsLocalMode() throws Exception {
    long seed = Seeds.fresh("clusterOutputEqualsLocalMode").nextLong();
    Map<String, List<String>> local;
    SparkSession spark = session("local[2]").getOrCreate();
    try {
      local = runJob(spark, seed, "local");
    } finally {
      spark.stop();
    }
    Map<String, List<String>> cluster;
    try (StandaloneCluster c = new StandaloneCluster(2, 1, "1536m")) {
      SparkSession cs =
          session(c.masterUrl())
              .config("spark.executor.extraClassPath", c.classpath)
              .config("spark.executor.extraJavaOptions", String.join(" ", c.opens))
              .config("spark.executor.memory", "1g")
              .config("spark.executor.cores", "1")
              .config("spark.cores.max", "2")
              .getOrCreate();
      try {
        waitForExecutors(cs, 2, c);
        cluster = runJob(cs, seed, "cluster");
        assertEquals(
            2,
            cs.sparkContext().statusTracker().getExecutorInfos().length - 1,
            "ran on two executors");
      } finally {
        cs.stop();
      }
    }
    assertEquals(local.keySet(), cluster.keySet());
    for (String k : local.keySet()) {
      assertTrue(local.get(k).size() > 0, k + " is not empty");
      assertEquals(local.get(k).size(), cluster.get(k).size(), k + " rows");
      assertArrayEquals(local.get(k).toArray(), cluster.get(k).toArray(), k);
    }
  }

  private static void waitForExecutors(SparkSession s, int n, StandaloneCluster c)
      throws Exception {
    long end = System.currentTimeMillis() + 120_000;
    while (s.sparkContext().statusTracker().getExecutorInfos().length < n + 1) {
      if (System.currentTimeMillis() > end) {
        throw new IllegalStateException(
            "executors did not register; worker log:\n" + Files.readString(c.log("worker-0")));
      }
      Thread.sleep(250);
    }
  }
}
