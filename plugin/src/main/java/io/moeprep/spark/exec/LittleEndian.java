package io.moeprep.spark.exec;

/** Little-endian packing of the dispatch chunks' columns. */
final class LittleEndian {
  private LittleEndian() {}

  static void putInt(byte[] b, int at, int v) {
    b[at] = (byte) v;
    b[at + 1] = (byte) (v >>> 8);
    b[at + 2] = (byte) (v >>> 16);
    b[at + 3] = (byte) (v >>> 24);
  }

  static void putLong(byte[] b, int at, long v) {
    putInt(b, at, (int) v);
    putInt(b, at + 4, (int) (v >>> 32));
  }

  static int getInt(byte[] b, int at) {
    return (b[at] & 0xFF)
        | (b[at + 1] & 0xFF) << 8
        | (b[at + 2] & 0xFF) << 16
        | (b[at + 3] & 0xFF) << 24;
  }

  static long getLong(byte[] b, int at) {
    return (getInt(b, at) & 0xFFFFFFFFL) | ((long) getInt(b, at + 4)) << 32;
  }
}
