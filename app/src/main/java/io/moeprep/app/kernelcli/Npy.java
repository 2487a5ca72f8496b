package io.moeprep.app.kernelcli;

import io.moeprep.kernels.memory.Closeables;
import io.moeprep.kernels.memory.HostBuffer;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * NumPy {@code .npy} files (format 1.0 to 3.0), little-endian, C order, read into and written from
 * {@link HostBuffer}s with 64-bit sizes.
 */
public final class Npy {
  private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};
  private static final Pattern DESCR = Pattern.compile("'descr'\\s*:\\s*'([^']*)'");
  private static final Pattern FORTRAN = Pattern.compile("'fortran_order'\\s*:\\s*(True|False)");
  private static final Pattern SHAPE = Pattern.compile("'shape'\\s*:\\s*\\(([^)]*)\\)");

  private Npy() {}

  /** An array read from a file; owns its data. */
  public record Array(Path path, String descr, long[] shape, HostBuffer data)
      implements AutoCloseable {
    /** Element count. */
    public long elements() {
      long n = 1;
      for (long d : shape) {
        n = Math.multiplyExact(n, d);
      }
      return n;
    }

    /** Size of dimension {@code i}. */
    public long dim(int i) {
      return shape[i];
    }

    @Override
    public void close() {
      data.close();
    }
  }

  /** Bytes of one element of a descr such as {@code <f4}, {@code |u1}. */
  public static int itemSize(String descr) {
    if (descr.length() < 3 || "<|=".indexOf(descr.charAt(0)) < 0) {
      throw new IllegalArgumentException(
          "dtype '" + descr + "' is not supported: only little-endian types are");
    }
    return Integer.parseInt(descr.substring(2));
  }

  /**
   * Reads a whole file.
   *
   * @throws IllegalArgumentException naming the file when it is not a C-order little-endian .npy
   */
  public static Array read(Path path) throws IOException {
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      ByteBuffer pre = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
      ch.read(pre, 0);
      pre.flip();
      byte[] magic = new byte[6];
      if (pre.remaining() < 10) {
        throw bad(path, "too short for a .npy header");
      }
      pre.get(magic);
      if (!Arrays.equals(magic, MAGIC)) {
        throw bad(path, "not a .npy file (bad magic)");
      }
      int major = pre.get();
      pre.get();
      long headerLen;
      int headerStart;
      if (major == 1) {
        headerLen = pre.getShort() & 0xFFFF;
        headerStart = 10;
      } else if (major == 2 || major == 3) {
        headerLen = pre.getInt() & 0xFFFFFFFFL;
        headerStart = 12;
      } else {
        throw bad(path, "unsupported .npy version " + major);
      }
      ByteBuffer hb = ByteBuffer.allocate((int) headerLen);
      ch.read(hb, headerStart);
      String header = new String(hb.array(), 0, hb.position(), StandardCharsets.ISO_8859_1);
      String descr = group(DESCR, header, path, "descr");
      if ("True".equals(group(FORTRAN, header, path, "fortran_order"))) {
        throw bad(path, "Fortran order is not supported: save it in C order");
      }
      long[] shape = parseShape(group(SHAPE, header, path, "shape"));
      long dataStart = headerStart + headerLen;
      int item = itemSize(descr);
      long elements = 1;
      for (long d : shape) {
        elements = Math.multiplyExact(elements, d);
      }
      long bytes = Math.multiplyExact(elements, (long) item);
      if (ch.size() - dataStart < bytes) {
        throw bad(
            path, "holds " + (ch.size() - dataStart) + " data bytes: its shape needs " + bytes);
      }
      HostBuffer data = HostBuffer.allocate(bytes);
      try {
        data.readFrom(ch, dataStart, 0, bytes);
      } catch (IOException | RuntimeException e) {
        Closeables.closeSuppressed(data, e);
        throw e;
      }
      return new Array(path, descr, shape, data);
    }
  }

  /** Writes {@code shape} elements of {@code descr} from {@code data} as a version 1.0 file. */
  public static void write(Path path, String descr, long[] shape, HostBuffer data)
      throws IOException {
    long elements = 1;
    for (long d : shape) {
      elements = Math.multiplyExact(elements, d);
    }
    long bytes = elements * itemSize(descr);
    StringBuilder dims = new StringBuilder();
    for (long d : shape) {
      dims.append(d).append(", ");
    }
    if (shape.length > 1) {
      dims.setLength(dims.length() - 2);
    } else if (shape.length == 1) {
      dims.setLength(dims.length() - 1);
    }
    String dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    int total = 10 + dict.length() + 1;
    int pad = (64 - total % 64) % 64;
    String header = dict + " ".repeat(pad) + "\n";
    ByteBuffer pre = ByteBuffer.allocate(10 + header.length()).order(ByteOrder.LITTLE_ENDIAN);
    pre.put(MAGIC).put((byte) 1).put((byte) 0).putShort((short) header.length());
    pre.put(header.getBytes(StandardCharsets.ISO_8859_1)).flip();
    try (FileChannel ch =
        FileChannel.open(
            path,
            StandardOpenOption.CREATE,
            StandardOpenOption.TRUNCATE_EXISTING,
            StandardOpenOption.WRITE)) {
      while (pre.hasRemaining()) {
        ch.write(pre);
      }
      if (bytes > 0) {
        data.writeTo(ch, 0, bytes);
      }
    }
  }

  private static long[] parseShape(String s) {
    List<Long> dims = new ArrayList<>();
    for (String part : s.split(",")) {
      if (!part.isBlank()) {
        dims.add(Long.parseLong(part.trim().replace("L", "")));
      }
    }
    return dims.stream().mapToLong(Long::longValue).toArray();
  }

  private static String group(Pattern p, String header, Path path, String key) {
    Matcher m = p.matcher(header);
    if (!m.find()) {
      throw bad(path, "header has no '" + key + "'");
    }
    return m.group(1);
  }

  private static IllegalArgumentException bad(Path path, String why) {
    return new IllegalArgumentException(path + ": " + why);
  }
}
