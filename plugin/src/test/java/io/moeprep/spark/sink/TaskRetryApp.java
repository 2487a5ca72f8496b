package io.moeprep.spark.sink;

import io.moeprep.kernels.DType;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.spark.ExceptionFailure;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;

/**
 * The child JVM of {@link TaskRetryTest}: a session that tries each task twice ({@code
 * local[2,2]}), and a write whose tasks fail on their first attempt, each after its partition's
 * first (rank, batch) was complete under the attempt's staging directory and the next one begun.
 * Arguments: the output directory and the seed of the fixtures. Prints the number of failed task
 * attempts.
 */
public final class TaskRetryApp {
  private TaskRetryApp() {}

  /** The (rank, batch)es of the test, by partition; the caller closes them. */
  static List<List<ShardFixture>> fixtures(long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    ShardFixture.Shape s = ShardFixture.Shape.of(4, 80, 24, 2, 8, DType.BF16).padded(12, 4);
    List<List<ShardFixture>> out = new ArrayList<>();
    out.add(List.of(ShardFixture.create(rnd, s, 0, 0), ShardFixture.create(rnd, s, 1, 0)));
    out.add(List.of(ShardFixture.create(rnd, s, 2, 0), ShardFixture.create(rnd, s, 3, 0)));
    return out;
  }

  /** The shard rows: each (rank, batch) in 3 parts, partition by partition. */
  static List<List<Row>> rows(List<List<ShardFixture>> fixtures, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed ^ 0x5EED);
    List<List<Row>> out = new ArrayList<>();
    for (List<ShardFixture> partition : fixtures) {
      List<Row> rows = new ArrayList<>();
      for (ShardFixture f : partition) {
        rows.addAll(ShardFixture.rows(f.parts(3, rnd)));
      }
      out.add(rows);
    }
    return out;
  }

  public static void main(String[] args) throws Exception {
    String out = args[0];
    long seed = Long.parseLong(args[1]);
    SparkSession spark =
        SparkSession.builder()
            .master("local[2,2]")
            .appName("moeprep-sink-retry")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.storage.exceptionOnPinLeak", "true")
            .getOrCreate();
    AtomicInteger failed = new AtomicInteger();
    spark
        .sparkContext()
        .addSparkListener(
            new SparkListener() {
              @Override
              public void onTaskEnd(SparkListenerTaskEnd end) {
                if (end.reason() instanceof ExceptionFailure) {
                  failed.incrementAndGet();
                }
              }
            });
    List<List<ShardFixture>> fixtures = fixtures(seed);
    try {
      List<List<Row>> partitions = rows(fixtures, seed);
      JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
      Dataset<Row> shards =
          spark
              .createDataFrame(
                  jsc.parallelize(partitions, partitions.size()).flatMap(List::iterator),
                  ShardSchema.SHARDS)
              .map(
                  (MapFunction<Row, Row>)
                      r -> {
                        // the second (rank, batch) of the partition, part 1: the first is complete
                        boolean second = r.getInt(0) % 2 == 1;
                        if (TaskContext.get().attemptNumber() == 0 && second && r.getInt(2) == 1) {
                          throw new IllegalStateException(
                              "first attempt of partition "
                                  + TaskContext.getPartitionId()
                                  + " fails on purpose");
                        }
                        return r;
                      },
                  Encoders.row(ShardSchema.SHARDS));
      shards.write().format("moeprep-safetensors").mode("overwrite").save(out);
      spark.sparkContext().listenerBus().waitUntilEmpty();
      System.out.println("failed task attempts: " + failed.get());
    } finally {
      fixtures.forEach(p -> p.forEach(ShardFixture::close));
      spark.stop();
    }
  }
}
