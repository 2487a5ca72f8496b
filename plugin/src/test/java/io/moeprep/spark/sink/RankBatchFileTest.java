package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.testing.LeakCheck;
import io.moeprep.kernels.testing.Seeds;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * The per-(rank, batch) file without Spark: shard parts of CPU permutes written part by part, read
 * back by an independent reader and checked against the permute and the contract; every bad input
 * fails with its message, part 0's before the output is opened.
 */
@ExtendWith(LeakCheck.class)
class RankBatchFileTest {
  @TempDir Path dir;

  /** Writes {@code parts} through a {@link RankBatchFile} to {@code file}. */
  static void write(List<ShardPart> parts, Path file) throws IOException {
    try (RankBatchFile f =
        RankBatchFile.start(
            parts.get(0), () -> new BufferedOutputStream(Files.newOutputStream(file)))) {
      for (ShardPart p : parts.subList(1, parts.size())) {
        f.add(p);
      }
      f.finish();
    }
  }

  @Test
  void everyDtypeAndShapeReadsBackAsThePermute() throws IOException {
    SplittableRandom rnd = Seeds.fresh("RankBatchFileTest.roundTrip");
    List<ShardFixture.Shape> shapes = new ArrayList<>();
    for (DType d : DType.values()) {
      shapes.add(ShardFixture.Shape.of(4, 61, 37, 3, 8, d).padded(5, 4));
      shapes.add(ShardFixture.Shape.of(2, 50, 9, 2, 6, d).noProbs());
    }
    shapes.add(ShardFixture.Shape.of(1, 33, 1, 1, 1, DType.BF16));
    shapes.add(ShardFixture.Shape.of(3, 0, 6, 2, 3, DType.F16));
    shapes.add(ShardFixture.Shape.of(8, 17, 130, 9, 16, DType.FP8_E5M2));
    int i = 0;
    for (ShardFixture.Shape s : shapes) {
      int rank = rnd.nextInt(s.epSize());
      try (ShardFixture f = ShardFixture.create(rnd, s, rank, i)) {
        Path file = dir.resolve("f" + i++ + ".safetensors");
        write(f.parts(1 + rnd.nextInt(5), rnd), file);
        try (SafetensorsReader r = SafetensorsReader.open(file)) {
          f.check(r);
        }
      }
    }
  }

  /** The fixture of the bad-input cases: 3 local experts of 8 rows (kept <= 7, some padding). */
  private static ShardFixture badInputFixture(SplittableRandom rnd) {
    return ShardFixture.create(
        rnd, ShardFixture.Shape.of(2, 40, 5, 3, 6, DType.BF16).padded(7, 4), 0, 3);
  }

  private record Case(String name, UnaryOperator<List<ShardPart>> change, String message) {}

  @SuppressWarnings("unchecked")
  private static ShardPart with(ShardPart p, Map<String, Object> v) {
    return new ShardPart(
        (int) v.getOrDefault("ep_rank", p.epRank()),
        (long) v.getOrDefault("batch", p.batch()),
        (int) v.getOrDefault("part", p.part()),
        (int) v.getOrDefault("parts", p.parts()),
        (long) v.getOrDefault("total_rows", p.totalRows()),
        (long) v.getOrDefault("tokens", p.tokens()),
        (int) v.getOrDefault("hidden", p.hidden()),
        (int) v.getOrDefault("top_k", p.topK()),
        (int) v.getOrDefault("num_experts", p.numExperts()),
        (String) v.getOrDefault("dtype", p.dtype()),
        v.containsKey("permuted") ? ShardPart.Slice.of((byte[]) v.get("permuted")) : p.permuted(),
        (byte[]) v.getOrDefault("source_token", p.sourceToken()),
        (byte[]) v.getOrDefault("source_slot", p.sourceSlot()),
        (byte[]) v.getOrDefault("permuted_probs", p.permutedProbs()),
        (byte[]) v.getOrDefault("row_id_map", p.rowIdMap()),
        (byte[]) v.getOrDefault("tokens_per_expert", p.tokensPerExpert()),
        (byte[]) v.getOrDefault("expert_offsets", p.expertOffsets()),
        (byte[]) v.getOrDefault("token_id", p.tokenId()),
        (Map<String, String>) v.getOrDefault("metadata", p.metadata()));
  }

  private static UnaryOperator<List<ShardPart>> onPart(int part, String column, Object value) {
    return parts -> {
      List<ShardPart> out = new ArrayList<>(parts);
      Map<String, Object> v = new HashMap<>();
      v.put(column, value);
      out.set(part, with(parts.get(part), v));
      return out;
    };
  }

  private static UnaryOperator<List<ShardPart>> onMetadata(String key, String value) {
    return parts -> {
      Map<String, String> m = new HashMap<>(parts.get(0).metadata());
      if (value == null) {
        m.remove(key);
      } else {
        m.put(key, value);
      }
      return onPart(0, "metadata", m).apply(parts);
    };
  }

  private static byte[] concat(byte[] a, byte[] b) {
    byte[] c = java.util.Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, c, a.length, b.length);
    return c;
  }

  private static byte[] shorter(byte[] b, int by) {
    return java.util.Arrays.copyOf(b, b.length - by);
  }

  private static byte[] putInt(byte[] b, int index, int v) {
    byte[] c = b.clone();
    java.nio.ByteBuffer.wrap(c).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(4 * index, v);
    return c;
  }

  private static byte[] putLong(byte[] b, int index, long v) {
    byte[] c = b.clone();
    java.nio.ByteBuffer.wrap(c).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(8 * index, v);
    return c;
  }

  /** Cases whose failure comes from part 0: the output must never be opened. */
  private static List<Case> firstPartCases(List<ShardPart> good) {
    ShardPart p0 = good.get(0);
    String w = "rank=0 batch=3 part=0: ";
    return List.of(
        new Case(
            "unknown dtype",
            onPart(0, "dtype", "int8"),
            w
                + "column dtype = 'int8' is invalid: must be one of f32, bf16, f16, fp8e4m3,"
                + " fp8e5m2"),
        new Case(
            "row_id_map size",
            onPart(0, "row_id_map", shorter(p0.rowIdMap(), 4)),
            w
                + "column row_id_map has 476 bytes: must be tokens x top_k x 4 (int32) = 480"
                + " bytes"),
        new Case(
            "tokens_per_expert missing",
            onPart(0, "tokens_per_expert", null),
            w + "column tokens_per_expert is null: must be num_experts x 8 (int64) bytes"),
        new Case(
            "expert_offsets size",
            onPart(0, "expert_offsets", shorter(p0.expertOffsets(), 8)),
            w + "column expert_offsets has 48 bytes: must be (num_experts+1) x 8 = 56 bytes"),
        new Case(
            "token_id size",
            onPart(0, "token_id", shorter(p0.tokenId(), 1)),
            w + "column token_id has 319 bytes: must be tokens x 8 (int64) = 320 bytes"),
        new Case(
            "metadata missing",
            onPart(0, "metadata", null),
            w + "column metadata is null: part 0 must carry the spec"),
        new Case(
            "ep_size missing",
            onMetadata("ep_size", null),
            w + "column metadata['ep_size'] = (missing) is invalid: must be an integer > ep_rank"),
        new Case(
            "ep_size too small",
            onMetadata("ep_size", "0"),
            w + "column metadata['ep_size'] = '0' is invalid"),
        new Case(
            "capacity invalid",
            onMetadata("capacity", "lots"),
            w
                + "column metadata['capacity'] = 'lots' is invalid: must be none, numOut:M,"
                + " perExpert:C or perExpertPadded:C"),
        new Case(
            "metadata that is not UTF-8",
            onMetadata("note", "half a pair \ud800"),
            w
                + "column metadata cannot go in a safetensors header: string 'half a pair \ud800'"
                + " has an unpaired surrogate at index 12: not valid UTF-8"),
        new Case(
            "metadata conflicts with a column",
            onMetadata("hidden", "6"),
            w + "column metadata['hidden'] = '6' conflicts with the sink's value '5'"),
        new Case(
            "negative rank",
            onPart(0, "ep_rank", -1),
            "rank=-1 batch=3 part=0: column ep_rank = -1 is invalid: must be >= 0"),
        new Case(
            "total rows over 2^31",
            onPart(0, "total_rows", 1L << 31),
            w + "column total_rows = 2147483648 is invalid: must be < 2^31"),
        new Case(
            "hidden zero",
            onPart(0, "hidden", 0),
            w + "column hidden = 0 is invalid: must be >= 1"),
        new Case(
            "first part not part 0",
            onPart(0, "part", 1),
            "rank=0 batch=3 part=1: column part = 1 is invalid: the first part must be part 0"),
        new Case(
            "permuted not whole rows",
            onPart(0, "permuted", shorter(p0.permuted().toArray(), 2)),
            w + "column permuted has " + (p0.permuted().length() - 2) + " bytes: must be a whole"),
        new Case(
            "source_token size",
            onPart(0, "source_token", shorter(p0.sourceToken(), 8)),
            w + "column source_token has " + (p0.sourceToken().length - 8) + " bytes: must be"),
        new Case(
            "row id out of range",
            onPart(0, "row_id_map", putInt(p0.rowIdMap(), 7, 999)),
            w + "row_id_map[2][1] = 999 is out of range [0, total_rows = 24) or -1"),
        new Case(
            "first offset not zero",
            onPart(0, "expert_offsets", putLong(p0.expertOffsets(), 0, 1)),
            w + "expert_offsets[0] = 1 is invalid: must be 0"),
        new Case(
            "segment shorter than its kept rows",
            onPart(0, "tokens_per_expert", putLong(p0.tokensPerExpert(), 0, 9)),
            w + "expert_offsets[1] = 8 is invalid: must be >= expert_offsets[0] +"),
        new Case(
            "negative token id",
            onPart(0, "token_id", putLong(p0.tokenId(), 0, -5)),
            w + "token_id[0] = -5 is invalid: must be >= 0"));
  }

  /** Cases whose failure comes from a later part or from the cross checks of {@code finish}. */
  private static List<Case> laterPartCases(List<ShardPart> good) {
    ShardPart p1 = good.get(1);
    String w = "rank=0 batch=3 part=1: ";
    return List.of(
        new Case(
            "hidden differs",
            onPart(1, "hidden", 6),
            w + "column hidden = 6 differs from part 0's 5: the columns ep_rank to dtype must be"),
        new Case(
            "dtype differs",
            onPart(1, "dtype", "f16"),
            w + "column dtype = 'f16' differs from part 0's 'bf16'"),
        new Case(
            "row_id_map on a later part",
            onPart(1, "row_id_map", good.get(0).rowIdMap()),
            w + "column row_id_map is set: it belongs on part 0 only (null on later parts)"),
        new Case(
            "probs on some parts only",
            onPart(1, "permuted_probs", null),
            w + "column permuted_probs is null but set on part 0"),
        new Case(
            "out of order",
            parts -> List.of(parts.get(0), parts.get(2), parts.get(1)),
            "rank=0 batch=3: part 1 of 3 was expected next, but rank=0 batch=3 part=2 came"),
        new Case(
            "another (rank, batch) before the end",
            onPart(1, "batch", 4L),
            "rank=0 batch=3: part 1 of 3 was expected next, but rank=0 batch=4 part=1 came"),
        new Case(
            "source token out of range",
            onPart(1, "source_token", putLong(p1.sourceToken(), 0, 40)),
            w + "source_token of row 10 = 40 is out of range [0, tokens = 40) or -1"),
        new Case(
            "rows short of total_rows",
            parts -> {
              ShardPart last = parts.get(2);
              Map<String, Object> v = new HashMap<>();
              v.put("permuted", shorter(last.permuted().toArray(), 10));
              v.put("source_token", shorter(last.sourceToken(), 8));
              v.put("source_slot", shorter(last.sourceSlot(), 8));
              v.put("permuted_probs", shorter(last.permutedProbs(), 4));
              return List.of(parts.get(0), parts.get(1), with(last, v));
            },
            "rank=0 batch=3 part=2: the 3 parts have 23 rows: must be total_rows = 24"),
        new Case(
            "rows beyond total_rows",
            parts -> {
              int extra = 100;
              Map<String, Object> v = new HashMap<>();
              v.put(
                  "permuted",
                  java.util.Arrays.copyOf(
                      p1.permuted().toArray(), p1.permuted().length() + 10 * extra));
              byte[] minusOne = new byte[8 * extra];
              java.util.Arrays.fill(minusOne, (byte) -1);
              v.put("source_token", concat(p1.sourceToken(), minusOne));
              v.put("source_slot", concat(p1.sourceSlot(), minusOne));
              v.put("permuted_probs", concat(p1.permutedProbs(), new byte[4 * extra]));
              List<ShardPart> out = new ArrayList<>(parts);
              out.set(1, with(p1, v));
              return out;
            },
            w + "parts 0 to 1 have 118 rows: more than total_rows = 24"),
        new Case(
            "sources swapped",
            parts -> {
              // two kept rows of part 1 trade their sources (both stay in range)
              byte[] st = p1.sourceToken().clone();
              byte[] ss = p1.sourceSlot().clone();
              java.nio.LongBuffer t =
                  java.nio.ByteBuffer.wrap(st)
                      .order(java.nio.ByteOrder.LITTLE_ENDIAN)
                      .asLongBuffer();
              java.nio.LongBuffer k =
                  java.nio.ByteBuffer.wrap(ss)
                      .order(java.nio.ByteOrder.LITTLE_ENDIAN)
                      .asLongBuffer();
              int a = -1;
              for (int i = 0; i < t.limit(); i++) {
                if (t.get(i) >= 0 && a < 0) {
                  a = i;
                } else if (t.get(i) >= 0) {
                  long tt = t.get(a);
                  long kk = k.get(a);
                  t.put(a, t.get(i)).put(i, tt);
                  k.put(a, k.get(i)).put(i, kk);
                  break;
                }
              }
              Map<String, Object> v = new HashMap<>();
              v.put("source_token", st);
              v.put("source_slot", ss);
              List<ShardPart> out = new ArrayList<>(parts);
              out.set(1, with(p1, v));
              return out;
            },
            " comes from token "),
        new Case(
            "padding row with a source",
            parts -> {
              // row 15 is expert 1's last row of 8 with capacity 7: always padding
              Map<String, Object> v = new HashMap<>();
              v.put("source_token", putLong(p1.sourceToken(), 5, 3));
              v.put("source_slot", putLong(p1.sourceSlot(), 5, 0));
              List<ShardPart> out = new ArrayList<>(parts);
              out.set(1, with(p1, v));
              return out;
            },
            "rank=0 batch=3: row 15 has source_token 3 but it is a padding row of expert 1's"
                + " segment [8, 16)"));
  }

  @TestFactory
  Stream<DynamicTest> badInputFailsNamingColumnValueAndPlace() {
    long seed = Seeds.fresh("RankBatchFileTest.badInput").nextLong();
    List<DynamicTest> tests = new ArrayList<>();
    try (ShardFixture f = badInputFixture(new SplittableRandom(seed))) {
      assertEquals(24, f.rows(), "3 local experts x 8 rows");
      List<ShardPart> good = f.partsAt(10, 18);
      for (Case c : firstPartCases(good)) {
        tests.add(DynamicTest.dynamicTest(c.name(), () -> expectFailure(seed, c, false)));
      }
      for (Case c : laterPartCases(good)) {
        tests.add(DynamicTest.dynamicTest(c.name(), () -> expectFailure(seed, c, true)));
      }
    }
    return tests.stream();
  }

  private void expectFailure(long seed, Case c, boolean mayOpen) throws IOException {
    try (ShardFixture f = badInputFixture(new SplittableRandom(seed))) {
      List<ShardPart> parts = c.change().apply(f.partsAt(10, 18));
      boolean[] opened = {false};
      Path file = dir.resolve(c.name().replace(' ', '_') + ".safetensors");
      Exception e =
          assertThrows(
              IllegalArgumentException.class,
              () -> {
                try (RankBatchFile w =
                    RankBatchFile.start(
                        parts.get(0),
                        () -> {
                          opened[0] = true;
                          return Files.newOutputStream(file);
                        })) {
                  for (ShardPart p : parts.subList(1, parts.size())) {
                    w.add(p);
                  }
                  w.finish();
                }
              },
              c.name());
      assertTrue(
          e.getMessage().contains(c.message()),
          c.name() + ": message\n  " + e.getMessage() + "\nlacks\n  " + c.message());
      if (!mayOpen) {
        assertFalse(opened[0], c.name() + ": the output must not be opened");
        assertFalse(Files.exists(file), c.name());
      }
    }
  }

  @Test
  void theGoodPartsOfTheBadInputFixtureAreAccepted() throws IOException {
    SplittableRandom rnd = Seeds.fresh("RankBatchFileTest.goodFixture");
    try (ShardFixture f = badInputFixture(rnd)) {
      Path file = dir.resolve("good.safetensors");
      write(f.partsAt(10, 18), file);
      try (SafetensorsReader r = SafetensorsReader.open(file)) {
        f.check(r);
      }
    }
  }

  @Test
  void aFileOfMoreThan2GiBStreamsWith64BitOffsets() throws IOException {
    // 32771 rows of 65536 FP8 elements: permuted is 2^31 + 3 x 2^16 bytes, in 9 parts of at most
    // 256 MiB; never one array or int for the whole tensor
    int hidden = 1 << 16;
    int rowsPerPart = 4096;
    long rows = 8L * rowsPerPart + 3;
    byte[] block = new byte[rowsPerPart * hidden];
    BigFileCheck check = new BigFileCheck(rows, hidden, rowsPerPart);
    RankBatchFile file = null;
    try {
      for (int p = 0; p < 9; p++) {
        long from = (long) p * rowsPerPart;
        int n = (int) Math.min(rowsPerPart, rows - from);
        byte[] permuted = n == rowsPerPart ? block : new byte[n * hidden];
        java.util.Arrays.fill(permuted, BigFileCheck.pattern(p));
        java.nio.ByteBuffer st =
            java.nio.ByteBuffer.allocate(8 * n).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        java.nio.ByteBuffer pr =
            java.nio.ByteBuffer.allocate(4 * n).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
          st.putLong(from + i);
          pr.putFloat(from + i);
        }
        ShardPart part =
            new ShardPart(
                2,
                7,
                p,
                9,
                rows,
                rows,
                hidden,
                1,
                1,
                "fp8e4m3",
                permuted,
                st.array(),
                new byte[8 * n],
                pr.array(),
                p == 0 ? check.rowIdMap() : null,
                p == 0 ? ShardFixture.longs(new long[] {rows}) : null,
                p == 0 ? ShardFixture.longs(new long[] {0, rows}) : null,
                p == 0 ? check.tokenIds() : null,
                p == 0 ? Map.of("ep_size", "4", "capacity", "none") : null);
        if (p == 0) {
          file = RankBatchFile.start(part, () -> check);
        } else {
          file.add(part);
        }
      }
      assertEquals(8 + check.headerLength() + 32 * rows + 24 + rows * hidden, file.fileBytes());
      file.finish();
    } finally {
      if (file != null) {
        file.close();
      }
    }
    check.verifyEnd();
  }

  /**
   * The output stream of the 2 GiB test: checks every byte as it comes, without storing the
   * permuted tensor: the header's offsets (computed here independently), each part's pattern, and
   * the tensors after {@code permuted}, kept (they are small) and checked at the end.
   */
  private static final class BigFileCheck extends OutputStream {
    private final long rows;
    private final long rowBytes;
    private final long partBytes;
    private final byte[] header = new byte[1 << 16];
    private final java.io.ByteArrayOutputStream tail = new java.io.ByteArrayOutputStream();
    private long position;
    private long headerLength = -1;
    private long permutedEnd = -1;
    private boolean closed;

    long headerLength() {
      return headerLength;
    }

    BigFileCheck(long rows, int hidden, int rowsPerPart) {
      this.rows = rows;
      this.rowBytes = hidden;
      this.partBytes = rowsPerPart * rowBytes;
    }

    static byte pattern(int part) {
      return (byte) (part * 37 + 11);
    }

    byte[] rowIdMap() {
      java.nio.ByteBuffer b =
          java.nio.ByteBuffer.allocate((int) (4 * rows)).order(java.nio.ByteOrder.LITTLE_ENDIAN);
      for (int i = 0; i < rows; i++) {
        b.putInt(i);
      }
      return b.array();
    }

    byte[] tokenIds() {
      long[] ids = new long[(int) rows];
      for (int i = 0; i < rows; i++) {
        ids[i] = 2L * i;
      }
      return ShardFixture.longs(ids);
    }

    @Override
    public void write(int b) throws IOException {
      write(new byte[] {(byte) b}, 0, 1);
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
      int i = off;
      int end = off + len;
      while (i < end) {
        if (headerLength < 0 || position < 8 + headerLength) {
          header[(int) position] = b[i++];
          position++;
          if (position == 8) {
            headerLength =
                java.nio.ByteBuffer.wrap(header, 0, 8)
                    .order(java.nio.ByteOrder.LITTLE_ENDIAN)
                    .getLong();
            assertTrue(headerLength < header.length - 8, "header length " + headerLength);
          }
          if (headerLength >= 0 && position == 8 + headerLength) {
            parseHeader();
          }
        } else if (position < permutedEnd) {
          long x = position - (8 + headerLength);
          int part = (int) (x / partBytes);
          int n = (int) Math.min(end - i, (part + 1) * partBytes - x);
          byte want = pattern(part);
          for (int j = i; j < i + n; j++) {
            if (b[j] != want) {
              throw new AssertionError("permuted byte " + (x + j - i) + " is " + b[j]);
            }
          }
          i += n;
          position += n;
        } else {
          tail.write(b, i, end - i);
          position += end - i;
          i = end;
        }
      }
    }

    private void parseHeader() throws IOException {
      String json =
          new String(header, 8, (int) headerLength, java.nio.charset.StandardCharsets.UTF_8);
      var root = new com.fasterxml.jackson.databind.ObjectMapper().readTree(json);
      long permuted = rows * rowBytes;
      assertTrue(permuted > (1L << 31), "more than 2 GiB");
      long[][] want = {
        {0, permuted},
        {permuted, permuted + 8 * rows},
        {permuted + 8 * rows, permuted + 16 * rows},
        {permuted + 16 * rows, permuted + 16 * rows + 8},
        {permuted + 16 * rows + 8, permuted + 16 * rows + 24},
        {permuted + 16 * rows + 24, permuted + 24 * rows + 24},
        {permuted + 24 * rows + 24, permuted + 28 * rows + 24},
        {permuted + 28 * rows + 24, permuted + 32 * rows + 24}
      };
      String[] names = {
        "permuted",
        "source_token",
        "source_slot",
        "tokens_per_expert",
        "expert_offsets",
        "token_id",
        "row_id_map",
        "permuted_probs"
      };
      for (int t = 0; t < names.length; t++) {
        var o = root.get(names[t]).get("data_offsets");
        assertEquals(want[t][0], o.get(0).longValue(), names[t] + " begin");
        assertEquals(want[t][1], o.get(1).longValue(), names[t] + " end");
      }
      assertEquals(rows, root.get("permuted").get("shape").get(0).longValue());
      assertEquals("F8_E4M3", root.get("permuted").get("dtype").textValue());
      assertEquals(0, (8 + headerLength) % 8, "permuted ends 8-aligned: 2^31 + 3 x 2^16");
      permutedEnd = 8 + headerLength + permuted;
    }

    @Override
    public void close() {
      closed = true;
    }

    void verifyEnd() {
      assertTrue(closed, "the stream was closed");
      long total = 8 + headerLength + 32 * rows + 24 + rows * rowBytes;
      assertEquals(total, position, "file size");
      java.nio.ByteBuffer t =
          java.nio.ByteBuffer.wrap(tail.toByteArray()).order(java.nio.ByteOrder.LITTLE_ENDIAN);
      for (long i = 0; i < rows; i++) {
        assertEquals(i, t.getLong(), "source_token");
      }
      for (long i = 0; i < rows; i++) {
        assertEquals(0, t.getLong(), "source_slot");
      }
      assertEquals(rows, t.getLong(), "tokens_per_expert");
      assertEquals(0, t.getLong(), "expert_offsets[0]");
      assertEquals(rows, t.getLong(), "expert_offsets[1]");
      for (long i = 0; i < rows; i++) {
        assertEquals(2 * i, t.getLong(), "token_id");
      }
      for (int i = 0; i < rows; i++) {
        assertEquals(i, t.getInt(), "row_id_map");
      }
      for (int i = 0; i < rows; i++) {
        assertEquals((float) i, t.getFloat(), "permuted_probs");
      }
      assertFalse(t.hasRemaining());
    }
  }
}
