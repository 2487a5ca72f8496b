package io.moeprep.spark.sink;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The first part of a safetensors file, computed before any data is written: an 8-byte
 * little-endian header length {@code N}, then {@code N} bytes of UTF-8 JSON giving each tensor's
 * {@code dtype}, {@code shape} and {@code data_offsets} {@code [begin, end)} (bytes from the start
 * of the data, which follows the header), and the {@code __metadata__} strings.
 *
 * <p>The tensors' data follow one another in the order given, without holes, so that the data
 * buffer is entirely indexed, as the format requires. The JSON is padded with spaces to the
 * smallest length at which every tensor starts at a file offset that is a multiple of its element
 * size (what memory-mapping readers need to view the bytes as typed arrays); for the sink's tensor
 * order (the one tensor of 1- or 2-byte elements first, then 8-byte, then 4-byte elements) such a
 * length always exists, and it is a multiple of 8 whenever the first tensor's size is. All sizes
 * and offsets are 64-bit.
 */
public final class SafetensorsHeader {
  /** The largest header that the format's reference reader accepts, in bytes. */
  public static final long MAX_HEADER_BYTES = 100_000_000L;

  /**
   * One tensor: its name, element type and shape (C order; every dimension {@code >= 0}; a
   * dimension of 0 gives an empty tensor, which the format allows).
   */
  public record Tensor(String name, TensorDType dtype, long[] shape) {
    public Tensor {
      if (name == null || name.isEmpty() || name.equals("__metadata__")) {
        throw new IllegalArgumentException(
            "tensor name '" + name + "' is invalid: must be non-empty and not __metadata__");
      }
      shape = shape.clone();
      long bytes = dtype.bytes();
      for (long d : shape) {
        if (d < 0) {
          throw new IllegalArgumentException(
              "tensor " + name + ": shape " + Arrays.toString(shape) + " has a negative dimension");
        }
        try {
          bytes = Math.multiplyExact(bytes, d);
        } catch (ArithmeticException e) {
          throw new IllegalArgumentException(
              "tensor " + name + ": shape " + Arrays.toString(shape) + " is over 2^63 bytes");
        }
      }
    }

    /** Size of the tensor's data in bytes. */
    public long bytes() {
      long n = dtype.bytes();
      for (long d : shape) {
        n *= d;
      }
      return n;
    }

    @Override
    public long[] shape() {
      return shape.clone();
    }
  }

  private final List<Tensor> tensors;
  private final Map<String, Integer> index;
  private final long[] begin;
  private final byte[] encoded;
  private final long dataBytes;

  private SafetensorsHeader(
      List<Tensor> tensors, Map<String, Integer> index, long[] begin, byte[] encoded, long data) {
    this.tensors = tensors;
    this.index = index;
    this.begin = begin;
    this.encoded = encoded;
    this.dataBytes = data;
  }

  /**
   * Lays out {@code tensors} in the order given and encodes the header.
   *
   * @param metadata the {@code __metadata__} strings (written sorted by key; none may be null)
   * @throws IllegalArgumentException for a duplicate tensor name, a null or unencodable string (an
   *     unpaired surrogate), no padding that aligns every tensor, or a header larger than {@link
   *     #MAX_HEADER_BYTES}
   */
  public static SafetensorsHeader of(List<Tensor> tensors, Map<String, String> metadata) {
    List<Tensor> list = List.copyOf(tensors);
    Map<String, Integer> index = new HashMap<>();
    long[] begin = new long[list.size()];
    long at = 0;
    for (int i = 0; i < list.size(); i++) {
      Tensor t = list.get(i);
      if (index.put(t.name(), i) != null) {
        throw new IllegalArgumentException("tensor name " + t.name() + " appears twice");
      }
      begin[i] = at;
      at = Math.addExact(at, t.bytes());
    }
    StringBuilder json = new StringBuilder(256).append('{');
    json.append("\"__metadata__\":{");
    boolean first = true;
    for (Map.Entry<String, String> e : new TreeMap<>(metadata).entrySet()) {
      if (e.getValue() == null) {
        throw new IllegalArgumentException("metadata '" + e.getKey() + "' is null");
      }
      json.append(first ? "" : ",");
      string(json, e.getKey()).append(':');
      string(json, e.getValue());
      first = false;
    }
    json.append('}');
    for (int i = 0; i < list.size(); i++) {
      Tensor t = list.get(i);
      json.append(',');
      string(json, t.name()).append(":{\"dtype\":\"").append(t.dtype().name());
      json.append("\",\"shape\":[");
      long[] shape = t.shape;
      for (int d = 0; d < shape.length; d++) {
        json.append(d == 0 ? "" : ",").append(shape[d]);
      }
      json.append("],\"data_offsets\":[").append(begin[i]).append(',');
      json.append(begin[i] + t.bytes()).append("]}");
    }
    json.append('}');
    byte[] text = json.toString().getBytes(StandardCharsets.UTF_8);
    long n = paddedLength(list, begin, text.length);
    if (n > MAX_HEADER_BYTES) {
      throw new IllegalArgumentException(
          "safetensors header of "
              + n
              + " bytes is too large: must be at most "
              + MAX_HEADER_BYTES
              + " (smaller metadata)");
    }
    byte[] encoded = new byte[8 + (int) n];
    for (int b = 0; b < 8; b++) {
      encoded[b] = (byte) (n >>> (8 * b));
    }
    System.arraycopy(text, 0, encoded, 8, text.length);
    Arrays.fill(encoded, 8 + text.length, encoded.length, (byte) ' ');
    return new SafetensorsHeader(list, Map.copyOf(index), begin, encoded, at);
  }

  /** The smallest length from {@code json} on at which every tensor is aligned. */
  private static long paddedLength(List<Tensor> tensors, long[] begin, long json) {
    for (long n = json; n < json + 8; n++) {
      boolean aligned = true;
      for (int i = 0; i < tensors.size() && aligned; i++) {
        aligned = (8 + n + begin[i]) % tensors.get(i).dtype().bytes() == 0;
      }
      if (aligned) {
        return n;
      }
    }
    List<String> order = new ArrayList<>();
    for (Tensor t : tensors) {
      order.add(t.name() + ":" + t.dtype() + ":" + t.bytes());
    }
    throw new IllegalArgumentException(
        "no header padding aligns every tensor to its element size: order "
            + order
            + " so that each tensor's offset is a multiple of its element size");
  }

  private static StringBuilder string(StringBuilder json, String s) {
    if (s == null) {
      throw new IllegalArgumentException("a metadata key or tensor name is null");
    }
    json.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (Character.isSurrogate(c)) {
        boolean paired =
            Character.isHighSurrogate(c)
                && i + 1 < s.length()
                && Character.isLowSurrogate(s.charAt(i + 1));
        if (!paired) {
          throw new IllegalArgumentException(
              "string '" + s + "' has an unpaired surrogate at index " + i + ": not valid UTF-8");
        }
        json.append(c).append(s.charAt(++i));
      } else if (c == '"' || c == '\\') {
        json.append('\\').append(c);
      } else if (c < 0x20) {
        json.append(String.format("\\u%04x", (int) c));
      } else {
        json.append(c);
      }
    }
    return json.append('"');
  }

  /** The tensors in data order. */
  public List<Tensor> tensors() {
    return tensors;
  }

  /** The header's bytes: the 8-byte length and the padded JSON. A copy. */
  public byte[] bytes() {
    return encoded.clone();
  }

  /** {@code N}, the length of the padded JSON in bytes. */
  public long jsonLength() {
    return encoded.length - 8L;
  }

  /** File offset of the data (the first tensor's first byte): {@code 8 + N}. */
  public long dataStart() {
    return encoded.length;
  }

  /** Bytes of data, the sum of the tensors' sizes. */
  public long dataBytes() {
    return dataBytes;
  }

  /** Size of the whole file in bytes. */
  public long fileBytes() {
    return encoded.length + dataBytes;
  }

  /**
   * Offset of tensor {@code name}'s first byte from the start of the data.
   *
   * @throws IllegalArgumentException when there is no such tensor
   */
  public long begin(String name) {
    return begin[indexOf(name)];
  }

  /** Offset just past tensor {@code name}'s last byte, from the start of the data. */
  public long end(String name) {
    int i = indexOf(name);
    return begin[i] + tensors.get(i).bytes();
  }

  private int indexOf(String name) {
    Integer i = index.get(name);
    if (i == null) {
      throw new IllegalArgumentException("tensor " + name + " is not in this header");
    }
    return i;
  }
}
