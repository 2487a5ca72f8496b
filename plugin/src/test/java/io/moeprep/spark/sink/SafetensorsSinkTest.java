package io.moeprep.spark.sink;

import static org.apache.spark.sql.functions.col;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.SparkSessions;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.scheduler.SparkListenerTaskStart;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * The {@code moeprep-safetensors} data source in the shared local session: files read back by the
 * independent reader and checked against CPU permutes and the contract; append, overwrite and
 * failed jobs; bad input. (Task retries need a session with retries: {@link TaskRetryTest}.)
 */
@ExtendWith(LeakCheck.class)
class SafetensorsSinkTest {
  private static final SparkSession SPARK = SparkSessions.local();

  @TempDir Path dir;
  private final List<ShardFixture> fixtures = new ArrayList<>();

  @AfterEach
  void closeFixtures() {
    awaitIdle();
    fixtures.forEach(ShardFixture::close);
    fixtures.clear();
  }

  /** Tasks started and not ended, counted from the listener bus (in event order). */
  private static final AtomicInteger RUNNING = new AtomicInteger();

  static {
    SPARK
        .sparkContext()
        .addSparkListener(
            new SparkListener() {
              @Override
              public void onTaskStart(SparkListenerTaskStart start) {
                RUNNING.incrementAndGet();
              }

              @Override
              public void onTaskEnd(SparkListenerTaskEnd end) {
                RUNNING.decrementAndGet();
              }
            });
  }

  /**
   * Waits until no task runs: when a job fails, its other tasks end (and abort) after the job has
   * failed, and they hold buffers and staged files until then. A task's start is on the listener
   * bus before its job ends, its end after its writer was closed.
   */
  static void awaitIdle() {
    SparkContext sc = SPARK.sparkContext();
    for (int i = 0; i < 600; i++) {
      try {
        sc.listenerBus().waitUntilEmpty();
        if (RUNNING.get() <= 0) {
          return;
        }
        Thread.sleep(50);
      } catch (TimeoutException e) {
        // the listener bus is busy: look again
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
    throw new AssertionError("tasks still run 30 s after their job ended");
  }

  private ShardFixture fixture(SplittableRandom rnd, ShardFixture.Shape s, int rank, long batch) {
    ShardFixture f = ShardFixture.create(rnd, s, rank, batch);
    fixtures.add(f);
    return f;
  }

  /** A DataFrame whose partitions hold the given rows, in order. */
  static Dataset<Row> frame(List<List<Row>> partitions) {
    JavaSparkContext jsc = JavaSparkContext.fromSparkContext(SPARK.sparkContext());
    JavaRDD<Row> rdd = jsc.parallelize(partitions, partitions.size()).flatMap(List::iterator);
    return SPARK.createDataFrame(rdd, ShardSchema.SHARDS);
  }

  private static void write(Dataset<Row> df, Path out, SaveMode mode) {
    df.write().format("moeprep-safetensors").mode(mode).save(out.toString());
  }

  private static Set<String> expectedFiles(List<ShardFixture> fs) {
    Set<String> s = new TreeSet<>();
    for (ShardFixture f : fs) {
      s.add(f.file());
    }
    s.add("_SUCCESS");
    return s;
  }

  private static void checkAll(Path out, List<ShardFixture> fs) throws IOException {
    assertEquals(expectedFiles(fs), SinkFiles.list(out), "files under " + out);
    for (ShardFixture f : fs) {
      try (SafetensorsReader r = SafetensorsReader.open(out.resolve(f.file()))) {
        f.check(r);
      }
    }
  }

  @Test
  void ranksAndBatchesOfSeveralPartsReadBackAsTheirPermutes() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.ranksAndBatches");
    List<ShardFixture> fs = new ArrayList<>();
    List<Row> rows = new ArrayList<>();
    for (int rank = 0; rank < 4; rank++) {
      for (long batch = 0; batch < 3; batch++) {
        ShardFixture.Shape s =
            ShardFixture.Shape.of(4, 40 + rnd.nextInt(160), 33, 4, 16, DType.BF16);
        if (rnd.nextBoolean()) {
          s = s.padded(6 + rnd.nextInt(10), 4);
        }
        ShardFixture f = fixture(rnd, s, rank, batch);
        fs.add(f);
        int parts = rank == 2 && batch == 1 ? 5 : 1 + rnd.nextInt(4);
        rows.addAll(ShardFixture.rows(f.parts(parts, rnd)));
      }
    }
    // any order, any partitioning: inWriteOrder brings each (rank, batch)'s parts together
    Collections.shuffle(rows, new java.util.Random(rnd.nextLong()));
    Dataset<Row> shards = ShardSchema.inWriteOrder(frame(List.of(rows)).repartition(3));
    Path out = dir.resolve("out");
    write(shards, out, SaveMode.Overwrite);
    checkAll(out, fs);
  }

  @Test
  void everyDtypeIsWrittenUnderItsSafetensorsName() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.dtypes");
    List<ShardFixture> fs = new ArrayList<>();
    List<List<Row>> partitions = new ArrayList<>();
    long batch = 0;
    for (DType d : DType.values()) {
      ShardFixture f = fixture(rnd, ShardFixture.Shape.of(2, 70, 13, 2, 4, d), 1, batch++);
      fs.add(f);
      partitions.add(ShardFixture.rows(f.parts(3, rnd)));
    }
    Path out = dir.resolve("out");
    write(frame(partitions), out, SaveMode.Append);
    checkAll(out, fs);
    List<String> names = new ArrayList<>();
    for (ShardFixture f : fs) {
      try (SafetensorsReader r = SafetensorsReader.open(out.resolve(f.file()))) {
        names.add(r.info("permuted").dtype());
      }
    }
    assertEquals(List.of("F32", "BF16", "F16", "F8_E4M3", "F8_E5M2"), names);
  }

  @Test
  void appendAddsFilesAndNeverReplacesOne() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.append");
    ShardFixture.Shape s = ShardFixture.Shape.of(4, 50, 7, 2, 8, DType.F16);
    ShardFixture a0 = fixture(rnd, s, 0, 0);
    ShardFixture a1 = fixture(rnd, s, 0, 1);
    ShardFixture b = fixture(rnd, s, 1, 0);
    Path out = dir.resolve("out");
    write(
        frame(List.of(ShardFixture.rows(a0.parts(2, rnd)), ShardFixture.rows(a1.parts(1, rnd)))),
        out,
        SaveMode.Append);
    write(frame(List.of(ShardFixture.rows(b.parts(3, rnd)))), out, SaveMode.Append);
    checkAll(out, List.of(a0, a1, b));
    byte[] before = Files.readAllBytes(out.resolve(a1.file()));

    ShardFixture again = fixture(rnd, s, 0, 1);
    ShardFixture fresh = fixture(rnd, s, 2, 0);
    Exception e =
        assertThrows(
            Exception.class,
            () ->
                write(
                    frame(
                        List.of(
                            ShardFixture.rows(fresh.parts(2, rnd)),
                            ShardFixture.rows(again.parts(2, rnd)))),
                    out,
                    SaveMode.Append));
    assertTrue(
        SinkFiles.messages(e)
            .contains(
                "would replace 1 existing file(s) (rank=0/batch=1.safetensors): append never"
                    + " replaces a file"),
        SinkFiles.messages(e));
    checkAll(out, List.of(a0, a1, b));
    assertArrayEquals(before, Files.readAllBytes(out.resolve(a1.file())));
  }

  @Test
  void overwriteReplacesTheOutputOnlyWhenItsJobSucceeds() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.overwrite");
    ShardFixture.Shape s = ShardFixture.Shape.of(4, 60, 10, 3, 8, DType.FP8_E4M3).padded(9, 2);
    ShardFixture x0 = fixture(rnd, s, 0, 0);
    ShardFixture x1 = fixture(rnd, s, 1, 0);
    Path out = dir.resolve("out");
    write(
        frame(List.of(ShardFixture.rows(x0.parts(2, rnd)), ShardFixture.rows(x1.parts(2, rnd)))),
        out,
        SaveMode.Overwrite);
    Files.writeString(out.resolve("notes.txt"), "kept until a job replaces the output");
    Map<String, byte[]> before = new HashMap<>();
    for (ShardFixture f : List.of(x0, x1)) {
      before.put(f.file(), Files.readAllBytes(out.resolve(f.file())));
    }
    Set<String> earlier = SinkFiles.list(out);

    // a task fails after part 0 of rank=3 batch=0 reached its file: nothing changes
    ShardFixture y0 = fixture(rnd, s, 2, 0);
    ShardFixture y1 = fixture(rnd, s, 3, 0);
    Dataset<Row> failing =
        frame(List.of(ShardFixture.rows(y0.parts(2, rnd)), ShardFixture.rows(y1.parts(3, rnd))))
            .map(
                (MapFunction<Row, Row>)
                    r -> {
                      if (r.getInt(0) == 3 && r.getInt(2) == 1) {
                        throw new IllegalStateException("injected failure at rank 3 part 1");
                      }
                      return r;
                    },
                Encoders.row(ShardSchema.SHARDS));
    Exception e = assertThrows(Exception.class, () -> write(failing, out, SaveMode.Overwrite));
    assertTrue(SinkFiles.messages(e).contains("injected failure"), SinkFiles.messages(e));
    awaitIdle();
    assertEquals(earlier, SinkFiles.list(out), "the earlier output, no staging files");

    // a (rank, batch) in two partitions fails the commit before anything moves
    List<ShardPart> twice = y1.parts(1, rnd);
    e =
        assertThrows(
            Exception.class,
            () ->
                write(
                    frame(List.of(ShardFixture.rows(twice), ShardFixture.rows(twice))),
                    out,
                    SaveMode.Overwrite));
    assertTrue(
        SinkFiles.messages(e)
            .contains(
                "rank=3 batch=0 was written twice in this job (by the tasks of partitions 0 and"
                    + " 1): each (rank, batch) must be written once; nothing was moved"),
        SinkFiles.messages(e));
    assertEquals(earlier, SinkFiles.list(out));
    for (ShardFixture f : List.of(x0, x1)) {
      assertArrayEquals(before.get(f.file()), Files.readAllBytes(out.resolve(f.file())));
    }

    write(
        frame(List.of(ShardFixture.rows(y0.parts(1, rnd)), ShardFixture.rows(y1.parts(4, rnd)))),
        out,
        SaveMode.Overwrite);
    checkAll(out, List.of(y0, y1));
  }

  @Test
  void aWrongSchemaFailsBeforeAnyJobNamingEachColumn() {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.schema");
    ShardFixture f = fixture(rnd, ShardFixture.Shape.of(1, 10, 4, 1, 2, DType.F32), 0, 0);
    Dataset<Row> good = frame(List.of(ShardFixture.rows(f.parts(1, rnd))));
    Path out = dir.resolve("out");
    Dataset<Row> bad =
        good.drop("token_id")
            .withColumn("batch", col("batch").cast(DataTypes.IntegerType))
            .withColumn("extra", col("part"));
    Exception e = assertThrows(Exception.class, () -> write(bad, out, SaveMode.Overwrite));
    String m = SinkFiles.messages(e);
    assertTrue(m.contains("the DataFrame is not in the shards schema (ShardSchema.SHARDS)"), m);
    assertTrue(m.contains("column batch has type int: must be bigint"), m);
    assertTrue(m.contains("column token_id is missing: must be binary"), m);
    assertTrue(m.contains("column extra is not a shard column: remove it"), m);
    assertTrue(!Files.exists(out), "nothing written");

    e =
        assertThrows(
            Exception.class, () -> good.write().format("moeprep-safetensors").save(out.toString()));
    assertTrue(SinkFiles.messages(e).contains("moeprep-safetensors"), SinkFiles.messages(e));
    assertTrue(!Files.exists(out), "nothing written");
  }

  @Test
  void badRowsFailTheJobNamingRankBatchPartColumnAndValueAndLeaveNoFile() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.badRows");
    ShardFixture.Shape s = ShardFixture.Shape.of(2, 30, 6, 2, 4, DType.BF16);
    ShardFixture ok = fixture(rnd, s, 0, 2);
    ShardFixture bad = fixture(rnd, s, 1, 2);
    Path out = dir.resolve("out");

    // two non-empty parts: part 1 has a source_token row to cut off below
    List<ShardPart> badParts = bad.partsAt(bad.rows() / 2);
    assertTrue(bad.rows() >= 2, "rank 1 has rows: " + bad.rows());
    ShardPart p0 = badParts.get(0);
    List<Row> badDtype = new ArrayList<>(ShardFixture.rows(badParts));
    Object[] v = new Object[19];
    for (int i = 0; i < 19; i++) {
      v[i] = badDtype.get(0).get(i);
    }
    v[9] = "int8";
    badDtype.set(0, org.apache.spark.sql.RowFactory.create(v));
    Exception e =
        assertThrows(
            Exception.class,
            () ->
                write(
                    frame(List.of(ShardFixture.rows(ok.parts(2, rnd)), badDtype)),
                    out,
                    SaveMode.Overwrite));
    assertTrue(
        SinkFiles.messages(e)
            .contains(
                "rank=1 batch=2 part=0: column dtype = 'int8' is invalid: must be one of f32,"
                    + " bf16, f16, fp8e4m3, fp8e5m2"),
        SinkFiles.messages(e));
    awaitIdle();
    assertEquals(Set.of(), SinkFiles.list(out), "no file, staged or final");

    // part 1 with a source_token column one row short
    List<Row> shortRows = new ArrayList<>(ShardFixture.rows(badParts));
    for (int i = 0; i < 19; i++) {
      v[i] = shortRows.get(1).get(i);
    }
    byte[] st = (byte[]) v[11];
    v[11] = java.util.Arrays.copyOf(st, st.length - 8);
    shortRows.set(1, org.apache.spark.sql.RowFactory.create(v));
    e =
        assertThrows(
            Exception.class, () -> write(frame(List.of(shortRows)), out, SaveMode.Overwrite));
    assertTrue(
        SinkFiles.messages(e)
            .contains(
                "rank=1 batch=2 part=1: column source_token has "
                    + (st.length - 8)
                    + " bytes: must be rows x 8 (int64), rows from permuted = "
                    + st.length
                    + " bytes"),
        SinkFiles.messages(e));
    awaitIdle();
    assertEquals(Set.of(), SinkFiles.list(out), "no file, staged or final");
    assertEquals(2, p0.parts());
  }

  @Test
  void partsOfABatchInTwoPartitionsFailNamingThePartExpected() throws IOException {
    SplittableRandom rnd = Seeds.fresh("SafetensorsSinkTest.split");
    ShardFixture f = fixture(rnd, ShardFixture.Shape.of(2, 30, 6, 2, 4, DType.F32), 0, 4);
    List<Row> rows = ShardFixture.rows(f.parts(2, rnd));
    Path out = dir.resolve("out");
    Exception e =
        assertThrows(
            Exception.class,
            () ->
                write(
                    frame(List.of(List.of(rows.get(0)), List.of(rows.get(1)))),
                    out,
                    SaveMode.Append));
    String m = SinkFiles.messages(e);
    assertTrue(
        m.contains("rank=0 batch=4: partition 0 ended before part 1 of 2")
            || m.contains(
                "rank=0 batch=4 part=1: part 0 of this (rank, batch) was expected first in"
                    + " partition 1, but part 1 came"),
        m);
    awaitIdle();
    assertEquals(Set.of(), SinkFiles.list(out));
  }
}
