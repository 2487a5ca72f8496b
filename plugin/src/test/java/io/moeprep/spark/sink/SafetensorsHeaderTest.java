package io.moeprep.spark.sink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.moeprep.spark.sink.SafetensorsHeader.Tensor;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The safetensors header and streaming writer, read back by the independent test reader. */
class SafetensorsHeaderTest {
  @TempDir Path dir;

  private static byte[] pattern(long bytes, int seed) {
    byte[] b = new byte[(int) bytes];
    for (int i = 0; i < b.length; i++) {
      b[i] = (byte) (i * 31 + seed);
    }
    return b;
  }

  /** Writes the tensors with pattern data, in pieces of 3 bytes, and opens the file. */
  private SafetensorsReader writeAndOpen(
      String name, List<Tensor> tensors, Map<String, String> metadata) throws IOException {
    SafetensorsHeader h = SafetensorsHeader.of(tensors, metadata);
    Path file = dir.resolve(name);
    try (OutputStream os = Files.newOutputStream(file);
        SafetensorsWriter w = new SafetensorsWriter(os, h)) {
      int seed = 0;
      for (Tensor t : tensors) {
        w.expectTensor(t.name());
        byte[] data = pattern(t.bytes(), seed++);
        for (int i = 0; i < data.length; i += 3) {
          w.write(data, i, Math.min(3, data.length - i));
        }
      }
      w.finish();
    }
    assertEquals(h.fileBytes(), Files.size(file));
    return SafetensorsReader.open(file);
  }

  @Test
  void everyTensorStartsAlignedWhateverTheFirstTensorsSize() throws IOException {
    for (TensorDType first : List.of(TensorDType.F8_E4M3, TensorDType.BF16, TensorDType.F32)) {
      for (long elements = 0; elements <= 9; elements++) {
        List<Tensor> tensors =
            List.of(
                new Tensor("x", first, new long[] {elements}),
                new Tensor("a", TensorDType.I64, new long[] {3}),
                new Tensor("b", TensorDType.I32, new long[] {1, 3}),
                new Tensor("c", TensorDType.F32, new long[] {2}));
        try (SafetensorsReader r = writeAndOpen(first + "-" + elements, tensors, Map.of())) {
          // the reader checks that every tensor is aligned to its element size in the file
          assertEquals(List.of("x", "a", "b", "c"), r.order());
          long firstBytes = elements * first.bytes();
          if (firstBytes % 8 == 0) {
            assertEquals(0, r.headerLength() % 8, "header a multiple of 8 when x is");
          }
          int seed = 0;
          for (Tensor t : tensors) {
            assertArrayEquals(pattern(t.bytes(), seed++), r.bytes(t.name()), t.name());
          }
        }
      }
    }
  }

  @Test
  void metadataStringsSurviveJsonEscaping() throws IOException {
    Map<String, String> m = new LinkedHashMap<>();
    m.put("quote\"key", "a \"b\" \\c\\ /d");
    m.put("controls", "tab\tnewline\nnul\u0000bell\u0007");
    m.put("unicode", "\u00e9\u65e5\ud83d\ude00");
    m.put("empty", "");
    try (SafetensorsReader r =
        writeAndOpen("meta", List.of(new Tensor("t", TensorDType.F16, new long[] {2, 0})), m)) {
      assertEquals(m, r.metadata());
      assertEquals(0, r.info("t").end());
    }
    assertThrows(
        IllegalArgumentException.class,
        () -> SafetensorsHeader.of(List.of(), Map.of("bad", "x\ud800y")));
  }

  @Test
  void offsetsAreSixtyFourBit() {
    long big = 3L << 30;
    SafetensorsHeader h =
        SafetensorsHeader.of(
            List.of(
                new Tensor("big", TensorDType.BF16, new long[] {big / 2 / 7, 7}),
                new Tensor("after", TensorDType.I64, new long[] {2})),
            Map.of());
    long bigBytes = big / 2 / 7 * 7 * 2;
    assertEquals(bigBytes, h.end("big"));
    assertEquals(bigBytes + 16, h.dataBytes());
    String json =
        new String(h.bytes(), 8, (int) h.jsonLength(), java.nio.charset.StandardCharsets.UTF_8);
    assertTrue(json.contains("\"data_offsets\":[0," + bigBytes + "]"), json);
    assertTrue(json.contains("\"data_offsets\":[" + bigBytes + "," + (bigBytes + 16) + "]"), json);
    assertEquals(0, (h.dataStart() + bigBytes) % 8, "the I64 after it is aligned");
  }

  @Test
  void theWriterRefusesDataOutOfOrderOrIncomplete() throws IOException {
    SafetensorsHeader h =
        SafetensorsHeader.of(
            List.of(
                new Tensor("a", TensorDType.I32, new long[] {2}),
                new Tensor("b", TensorDType.I64, new long[] {1})),
            Map.of());
    OutputStream sink = OutputStream.nullOutputStream();
    try (SafetensorsWriter w = new SafetensorsWriter(sink, h)) {
      assertThrows(IllegalStateException.class, () -> w.expectTensor("b"));
      w.write(new byte[8], 0, 8);
      w.expectTensor("b");
      assertThrows(IllegalStateException.class, () -> w.write(new byte[9], 0, 9));
      assertThrows(IllegalStateException.class, w::finish);
    }
    assertThrows(
        IllegalArgumentException.class,
        () ->
            SafetensorsHeader.of(
                List.of(
                    new Tensor("a", TensorDType.I32, new long[] {1}),
                    new Tensor("a", TensorDType.I32, new long[] {1})),
                Map.of()));
    assertThrows(
        IllegalArgumentException.class,
        () -> new Tensor("__metadata__", TensorDType.I32, new long[] {1}));
    assertThrows(
        IllegalArgumentException.class,
        () -> new Tensor("x", TensorDType.I64, new long[] {1L << 40, 1L << 30}));
  }
}
