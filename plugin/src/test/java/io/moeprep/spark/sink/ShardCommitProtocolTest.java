package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.Seeds;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.CatalystTypeConverters;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.write.DataWriter;
import org.apache.spark.sql.connector.write.DataWriterFactory;
import org.apache.spark.sql.connector.write.WriterCommitMessage;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import scala.Function1;

/**
 * The commit protocol driven as Spark drives it, without a scheduler, for what a local session
 * cannot provoke: an attempt whose executor was lost (no commit, no abort), and a job commit whose
 * move fails halfway.
 */
@ExtendWith(LeakCheck.class)
class ShardCommitProtocolTest {
  private static final Function1<Object, Object> TO_INTERNAL =
      CatalystTypeConverters.createToCatalystConverter(ShardSchema.SHARDS);

  @TempDir Path dir;
  private final List<ShardFixture> fixtures = new ArrayList<>();

  @AfterEach
  void closeFixtures() {
    fixtures.forEach(ShardFixture::close);
  }

  private ShardFixture fixture(SplittableRandom rnd, int rank, long batch) {
    ShardFixture f =
        ShardFixture.create(
            rnd, ShardFixture.Shape.of(8, 45, 11, 2, 16, DType.BF16).padded(4, 2), rank, batch);
    fixtures.add(f);
    return f;
  }

  private ShardBatchWrite job(Path out, String queryId, boolean overwrite) {
    return new ShardBatchWrite(
        new org.apache.hadoop.fs.Path(out.toUri()).toString(),
        queryId,
        overwrite,
        ShardSchema.ordinals(ShardSchema.SHARDS),
        new HadoopConf(new Configuration()));
  }

  private static void write(DataWriter<InternalRow> w, List<Row> rows) throws IOException {
    for (Row r : rows) {
      w.write((InternalRow) TO_INTERNAL.apply(r));
    }
  }

  /** One task attempt that writes {@code rows} and commits. */
  private static WriterCommitMessage task(
      DataWriterFactory f, int partition, long taskId, List<Row> rows) throws IOException {
    DataWriter<InternalRow> w = f.createWriter(partition, taskId);
    try {
      write(w, rows);
      return w.commit();
    } finally {
      w.close();
    }
  }

  private static Set<String> tree(Path root) throws IOException {
    Set<String> all = new TreeSet<>();
    if (Files.exists(root)) {
      try (var s = Files.walk(root)) {
        s.forEach(p -> all.add(root.relativize(p).toString()));
      }
    }
    return all;
  }

  @Test
  void anAttemptThatNeverAbortedLeavesNoSecondCopy() throws IOException {
    SplittableRandom rnd = Seeds.fresh("ShardCommitProtocolTest.lostAttempt");
    ShardFixture g = fixture(rnd, 0, 0);
    ShardFixture h = fixture(rnd, 1, 0);
    List<Row> rows = new ArrayList<>(ShardFixture.rows(g.parts(2, rnd)));
    rows.addAll(ShardFixture.rows(h.parts(3, rnd)));
    Path out = dir.resolve("out");
    ShardBatchWrite job = job(out, "q-lost", false);
    DataWriterFactory factory = job.createBatchWriterFactory(null);

    // attempt 7 of partition 0 writes g and h's first part, then its executor is lost
    DataWriter<InternalRow> lost = factory.createWriter(0, 7);
    write(lost, rows.subList(0, 3));
    lost.close();
    Path staged = out.resolve("_temporary/q-lost/attempt-0-7");
    assertEquals(
        Set.of("rank=0-batch=0.safetensors", "rank=1-batch=0.safetensors"),
        SinkFiles.list(staged),
        "the lost attempt's files: g complete, h begun");

    WriterCommitMessage m = task(factory, 0, 8, rows);
    job.commit(new WriterCommitMessage[] {m});
    assertEquals(Set.of(g.file(), h.file(), "_SUCCESS"), SinkFiles.list(out));
    assertTrue(!Files.exists(out.resolve("_temporary")), "staging removed: " + tree(out));
    for (ShardFixture f : List.of(g, h)) {
      try (SafetensorsReader r = SafetensorsReader.open(out.resolve(f.file()))) {
        f.check(r);
      }
    }
  }

  @Test
  void aRankBatchTwiceInOnePartitionFailsItsTask() throws IOException {
    SplittableRandom rnd = Seeds.fresh("ShardCommitProtocolTest.twiceInPartition");
    ShardFixture g = fixture(rnd, 4, 1);
    List<Row> rows = new ArrayList<>(ShardFixture.rows(g.parts(2, rnd)));
    rows.addAll(ShardFixture.rows(g.parts(1, rnd)));
    Path out = dir.resolve("out");
    DataWriterFactory factory = job(out, "q-twice", false).createBatchWriterFactory(null);
    DataWriter<InternalRow> w = factory.createWriter(3, 5);
    try {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> write(w, rows));
      assertEquals(
          "rank=4 batch=1 part=0: this (rank, batch) comes a second time in partition 3: each"
              + " (rank, batch) must be written once",
          e.getMessage());
      w.abort();
    } finally {
      w.close();
    }
    assertEquals(Set.of(), SinkFiles.list(out));
  }

  @Test
  void aTaskAbortDeletesItsFilesAndAJobAbortTheRest() throws IOException {
    SplittableRandom rnd = Seeds.fresh("ShardCommitProtocolTest.abort");
    ShardFixture g = fixture(rnd, 2, 5);
    ShardFixture h = fixture(rnd, 3, 5);
    Path out = dir.resolve("out");
    ShardBatchWrite job = job(out, "q-abort", true);
    DataWriterFactory factory = job.createBatchWriterFactory(null);
    WriterCommitMessage m = task(factory, 0, 1, ShardFixture.rows(g.parts(2, rnd)));
    DataWriter<InternalRow> failing = factory.createWriter(1, 2);
    write(failing, ShardFixture.rows(h.parts(3, rnd)).subList(0, 2));
    failing.abort();
    failing.close();
    assertEquals(
        Set.of("attempt-0-1/rank=2-batch=5.safetensors"),
        SinkFiles.list(out.resolve("_temporary/q-abort")));
    job.abort(new WriterCommitMessage[] {m, null});
    assertEquals(Set.of(""), tree(out), "an empty output directory");
  }

  @Test
  void aCommitThatFailsHalfwayPutsTheEarlierOutputBack() throws IOException {
    SplittableRandom rnd = Seeds.fresh("ShardCommitProtocolTest.undo");
    ShardFixture x = fixture(rnd, 0, 9);
    Path out = dir.resolve("out");
    ShardBatchWrite first = job(out, "q-first", true);
    first.commit(
        new WriterCommitMessage[] {
          task(first.createBatchWriterFactory(null), 0, 1, ShardFixture.rows(x.parts(1, rnd)))
        });
    byte[] before = Files.readAllBytes(out.resolve(x.file()));
    Set<String> earlier = tree(out);

    ShardFixture y5 = fixture(rnd, 5, 0);
    ShardFixture y6 = fixture(rnd, 6, 0);
    ShardBatchWrite second = job(out, "q-second", true);
    DataWriterFactory factory = second.createBatchWriterFactory(null);
    WriterCommitMessage[] messages = {
      task(factory, 0, 1, ShardFixture.rows(y5.parts(2, rnd))),
      task(factory, 1, 2, ShardFixture.rows(y6.parts(2, rnd)))
    };
    // rank=6's staged file is lost before the job commits: its move fails after rank=5's
    Files.delete(out.resolve("_temporary/q-second/attempt-1-2/rank=6-batch=0.safetensors"));
    UncheckedIOException e =
        assertThrows(UncheckedIOException.class, () -> second.commit(messages));
    assertTrue(
        SinkFiles.messages(e).contains("attempt-1-2/rank=6-batch=0.safetensors"),
        SinkFiles.messages(e));
    second.abort(messages);
    assertEquals(earlier, tree(out), "the earlier output, back in place, and nothing else");
    assertArrayEquals(before, Files.readAllBytes(out.resolve(x.file())));
  }
}
