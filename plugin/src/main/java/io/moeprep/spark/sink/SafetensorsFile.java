package io.moeprep.spark.sink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Reads a safetensors file the sink wrote, on any Hadoop file system: its header (tensors with
 * dtype, shape and byte range, and the {@code __metadata__} strings), and a tensor's bytes. For the
 * job's manifest and {@code verify}; the sink's tests use a reader of their own.
 */
public final class SafetensorsFile {
  /** One tensor of the header: its safetensors dtype, shape, and bytes from the data start. */
  public record Entry(String dtype, long[] shape, long begin, long end) {
    /** Bytes of the tensor. */
    public long bytes() {
      return end - begin;
    }
  }

  private final FileSystem fs;
  private final Path path;
  private final long dataStart;
  private final Map<String, Entry> tensors;
  private final Map<String, String> metadata;

  private SafetensorsFile(
      FileSystem fs,
      Path path,
      long dataStart,
      Map<String, Entry> tensors,
      Map<String, String> metadata) {
    this.fs = fs;
    this.path = path;
    this.dataStart = dataStart;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /**
   * Reads the header of {@code path}.
   *
   * @throws IOException when the file cannot be read or is not a safetensors file (the message
   *     names the file and what is wrong)
   */
  public static SafetensorsFile open(FileSystem fs, Path path) throws IOException {
    try (FSDataInputStream in = fs.open(path)) {
      byte[] len = new byte[8];
      in.readFully(0, len);
      long n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong();
      if (n < 2 || n > SafetensorsHeader.MAX_HEADER_BYTES) {
        throw new IOException(path + ": header length " + n + " is not a safetensors header");
      }
      byte[] json = new byte[(int) n];
      in.readFully(8, json);
      JsonNode root = new ObjectMapper().readTree(new String(json, StandardCharsets.UTF_8));
      Map<String, Entry> tensors = new LinkedHashMap<>();
      Map<String, String> metadata = new LinkedHashMap<>();
      Iterator<Map.Entry<String, JsonNode>> it = root.fields();
      while (it.hasNext()) {
        Map.Entry<String, JsonNode> e = it.next();
        JsonNode v = e.getValue();
        if (e.getKey().equals("__metadata__")) {
          v.fields().forEachRemaining(m -> metadata.put(m.getKey(), m.getValue().asText()));
          continue;
        }
        JsonNode s = v.get("shape");
        long[] shape = new long[s.size()];
        for (int d = 0; d < shape.length; d++) {
          shape[d] = s.get(d).asLong();
        }
        JsonNode o = v.get("data_offsets");
        tensors.put(
            e.getKey(),
            new Entry(v.get("dtype").asText(), shape, o.get(0).asLong(), o.get(1).asLong()));
      }
      return new SafetensorsFile(fs, path, 8 + n, tensors, metadata);
    } catch (RuntimeException e) {
      throw new IOException(path + " is not a safetensors file: " + e.getMessage(), e);
    }
  }

  /** The tensors, in header order. */
  public Map<String, Entry> tensors() {
    return tensors;
  }

  /** The {@code __metadata__} strings. */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** The tensor {@code name}. */
  public Entry entry(String name) throws IOException {
    Entry e = tensors.get(name);
    if (e == null) {
      throw new IOException(path + " has no tensor " + name);
    }
    return e;
  }

  /** The bytes of tensor {@code name} (under 2 GiB), little-endian as stored. */
  public byte[] bytes(String name) throws IOException {
    Entry e = entry(name);
    byte[] b = new byte[Math.toIntExact(e.bytes())];
    try (FSDataInputStream in = fs.open(path)) {
      in.readFully(dataStart + e.begin(), b);
    }
    return b;
  }
}
