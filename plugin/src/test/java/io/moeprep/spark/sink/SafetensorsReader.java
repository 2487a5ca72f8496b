package io.moeprep.spark.sink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A minimal safetensors reader for the tests, written from the format's description and sharing
 * nothing with the sink: reads the 8-byte little-endian header length, parses the JSON header with
 * Jackson, checks the format's rules (header starts with '{', only spaces after the JSON, every
 * tensor's size equal to its shape times its element size, data offsets that cover the data without
 * holes or overlaps up to the end of the file) and the sink's promise that every tensor starts at a
 * file offset that is a multiple of its element size, and reads tensors by offset.
 */
final class SafetensorsReader implements AutoCloseable {
  private static final Map<String, Integer> SIZES =
      Map.ofEntries(
          Map.entry("BOOL", 1),
          Map.entry("U8", 1),
          Map.entry("I8", 1),
          Map.entry("F8_E4M3", 1),
          Map.entry("F8_E5M2", 1),
          Map.entry("I16", 2),
          Map.entry("U16", 2),
          Map.entry("F16", 2),
          Map.entry("BF16", 2),
          Map.entry("I32", 4),
          Map.entry("U32", 4),
          Map.entry("F32", 4),
          Map.entry("I64", 8),
          Map.entry("U64", 8),
          Map.entry("F64", 8));

  /** One tensor of the header: offsets from the start of the data. */
  record Info(String dtype, long[] shape, long begin, long end) {
    long elements() {
      long n = 1;
      for (long d : shape) {
        n *= d;
      }
      return n;
    }
  }

  private final FileChannel channel;
  private final long headerLength;
  private final Map<String, Info> tensors;
  private final Map<String, String> metadata;
  private final List<String> order;

  private SafetensorsReader(
      FileChannel channel,
      long headerLength,
      Map<String, Info> tensors,
      Map<String, String> metadata,
      List<String> order) {
    this.channel = channel;
    this.headerLength = headerLength;
    this.tensors = tensors;
    this.metadata = metadata;
    this.order = order;
  }

  /** Opens and checks {@code file}; fails with an {@link AssertionError} naming the rule broken. */
  static SafetensorsReader open(Path file) throws IOException {
    FileChannel ch = FileChannel.open(file, StandardOpenOption.READ);
    try {
      long size = ch.size();
      check(size >= 8, "file of " + size + " bytes has no header length");
      ByteBuffer len = read(ch, 0, 8);
      long n = len.order(ByteOrder.LITTLE_ENDIAN).getLong(0);
      check(n >= 2 && n <= 100_000_000 && 8 + n <= size, "header length " + n + " is invalid");
      ByteBuffer hb = read(ch, 8, (int) n);
      byte[] h = new byte[(int) n];
      hb.get(h);
      String text = new String(h, StandardCharsets.UTF_8);
      check(text.charAt(0) == '{', "header does not start with '{'");
      String json = text.stripTrailing();
      check(json.endsWith("}"), "header JSON does not end with '}'");
      for (int i = json.length(); i < text.length(); i++) {
        check(text.charAt(i) == ' ', "header padding has a character other than a space");
      }
      JsonNode root = new ObjectMapper().readTree(json);
      check(root.isObject(), "header is not a JSON object");
      Map<String, Info> tensors = new LinkedHashMap<>();
      Map<String, String> metadata = new LinkedHashMap<>();
      Iterator<Map.Entry<String, JsonNode>> it = root.fields();
      while (it.hasNext()) {
        Map.Entry<String, JsonNode> e = it.next();
        if (e.getKey().equals("__metadata__")) {
          Iterator<Map.Entry<String, JsonNode>> m = e.getValue().fields();
          while (m.hasNext()) {
            Map.Entry<String, JsonNode> kv = m.next();
            check(kv.getValue().isTextual(), "metadata " + kv.getKey() + " is not a string");
            metadata.put(kv.getKey(), kv.getValue().textValue());
          }
          continue;
        }
        JsonNode t = e.getValue();
        String dtype = t.get("dtype").textValue();
        check(SIZES.containsKey(dtype), "tensor " + e.getKey() + " has unknown dtype " + dtype);
        JsonNode s = t.get("shape");
        long[] shape = new long[s.size()];
        for (int d = 0; d < shape.length; d++) {
          check(s.get(d).canConvertToLong() && s.get(d).longValue() >= 0, "bad shape");
          shape[d] = s.get(d).longValue();
        }
        JsonNode o = t.get("data_offsets");
        check(o.size() == 2, "data_offsets of " + e.getKey() + " is not a pair");
        tensors.put(e.getKey(), new Info(dtype, shape, o.get(0).longValue(), o.get(1).longValue()));
      }
      List<String> order = new ArrayList<>(tensors.keySet());
      order.sort(
          Comparator.comparingLong((String k) -> tensors.get(k).begin())
              .thenComparingLong(k -> tensors.get(k).end()));
      long at = 0;
      for (String k : order) {
        Info i = tensors.get(k);
        check(i.begin() == at, "tensor " + k + " begins at " + i.begin() + ", not " + at);
        check(
            i.end() - i.begin() == i.elements() * SIZES.get(i.dtype()),
            "tensor " + k + " has " + (i.end() - i.begin()) + " bytes for its shape and dtype");
        check(
            (8 + n + i.begin()) % SIZES.get(i.dtype()) == 0,
            "tensor " + k + " is not aligned to its element size in the file");
        at = i.end();
      }
      check(8 + n + at == size, "the data end at " + (8 + n + at) + " but the file has " + size);
      return new SafetensorsReader(ch, n, tensors, metadata, order);
    } catch (IOException | RuntimeException | Error e) {
      ch.close();
      throw e;
    }
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError("not a valid safetensors file: " + what);
    }
  }

  private static ByteBuffer read(FileChannel ch, long position, int length) throws IOException {
    ByteBuffer b = ByteBuffer.allocate(length);
    while (b.hasRemaining()) {
      if (ch.read(b, position + b.position()) < 0) {
        throw new AssertionError("file ends early");
      }
    }
    return b.flip();
  }

  /** {@code N}, the header's length. */
  long headerLength() {
    return headerLength;
  }

  /** The tensors by name. */
  Map<String, Info> tensors() {
    return tensors;
  }

  /** The tensor names in data order. */
  List<String> order() {
    return order;
  }

  /** The {@code __metadata__} strings. */
  Map<String, String> metadata() {
    return metadata;
  }

  /** Tensor {@code name}'s info; fails when absent. */
  Info info(String name) {
    Info i = tensors.get(name);
    if (i == null) {
      throw new AssertionError("tensor " + name + " is missing; there are " + tensors.keySet());
    }
    return i;
  }

  /** {@code length} bytes of tensor {@code name} from byte {@code offset} of the tensor. */
  ByteBuffer bytes(String name, long offset, int length) throws IOException {
    Info i = info(name);
    if (offset < 0 || offset + length > i.end() - i.begin()) {
      throw new AssertionError("bytes outside tensor " + name);
    }
    return read(channel, 8 + headerLength + i.begin() + offset, length)
        .order(ByteOrder.LITTLE_ENDIAN);
  }

  /** All bytes of tensor {@code name} (under 2 GiB). */
  byte[] bytes(String name) throws IOException {
    Info i = info(name);
    byte[] b = new byte[Math.toIntExact(i.end() - i.begin())];
    bytes(name, 0, b.length).get(b);
    return b;
  }

  /** An I64 tensor's values. */
  long[] longs(String name) throws IOException {
    assertDtype(name, "I64");
    ByteBuffer b = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN);
    long[] v = new long[b.remaining() / 8];
    b.asLongBuffer().get(v);
    return v;
  }

  /** An I32 tensor's values. */
  int[] ints(String name) throws IOException {
    assertDtype(name, "I32");
    ByteBuffer b = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN);
    int[] v = new int[b.remaining() / 4];
    b.asIntBuffer().get(v);
    return v;
  }

  /** An F32 tensor's values, as their bits. */
  int[] floatBits(String name) throws IOException {
    assertDtype(name, "F32");
    ByteBuffer b = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN);
    int[] v = new int[b.remaining() / 4];
    b.asIntBuffer().get(v);
    return v;
  }

  private void assertDtype(String name, String dtype) {
    if (!info(name).dtype().equals(dtype)) {
      throw new AssertionError(name + " is " + info(name).dtype() + ", not " + dtype);
    }
  }

  @Override
  public void close() throws IOException {
    channel.close();
  }
}
