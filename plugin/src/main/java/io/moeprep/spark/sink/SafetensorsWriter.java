package io.moeprep.spark.sink;

import io.moeprep.kernels.memory.HostBuffer;
import java.io.Closeable;
import java.io.IOException;
import java.io.OutputStream;
import java.util.Objects;

/**
 * Streams one safetensors file to an {@link OutputStream}: the header first (from a {@link
 * SafetensorsHeader}, whose offsets were computed before any data), then the tensors' data in the
 * header's order, in pieces of any size, so that no tensor and no file need be held in memory.
 * Spark-free; the stream may come from any file system.
 *
 * <p>Owns the stream: {@link #finish()} checks that exactly the header's data were written, then
 * flushes and closes it; {@link #close()} without {@link #finish()} only closes it, leaving an
 * incomplete file that the caller deletes.
 */
public final class SafetensorsWriter implements Closeable {
  private final OutputStream out;
  private final SafetensorsHeader header;
  private long position;
  private boolean closed;

  /**
   * Writes {@code header} to {@code out}. If that fails, {@code out} is closed.
   *
   * @throws IOException from the stream
   */
  public SafetensorsWriter(OutputStream out, SafetensorsHeader header) throws IOException {
    this.out = Objects.requireNonNull(out, "out");
    this.header = header;
    try {
      out.write(header.bytes());
    } catch (IOException | RuntimeException e) {
      closeQuietly(e);
      throw e;
    }
  }

  /** The header being written. */
  public SafetensorsHeader header() {
    return header;
  }

  /** Data bytes written so far (the offset, from the start of the data, of the next byte). */
  public long position() {
    return position;
  }

  /**
   * Checks that the next byte written is tensor {@code name}'s first.
   *
   * @throws IllegalStateException when it is not (the caller wrote the tensors out of order)
   */
  public void expectTensor(String name) {
    long begin = header.begin(name);
    if (position != begin) {
      throw new IllegalStateException(
          "tensor " + name + " starts at data offset " + begin + " but " + position + " bytes");
    }
  }

  /** Appends {@code length} data bytes of {@code b} from {@code offset}. */
  public void write(byte[] b, int offset, int length) throws IOException {
    Objects.checkFromIndexSize(offset, length, b.length);
    advance(length);
    out.write(b, offset, length);
  }

  /** Appends {@code length} data bytes of {@code b} from {@code offset} (64-bit). */
  public void write(HostBuffer b, long offset, long length) throws IOException {
    Objects.checkFromIndexSize(offset, length, b.size());
    advance(length);
    b.writeTo(out, offset, length);
  }

  /**
   * Appends tensor {@code name}, all of whose bytes are the first bytes of {@code b}.
   *
   * @throws IllegalStateException when the tensor is not the next one
   * @throws IllegalArgumentException when {@code b} is smaller than the tensor
   */
  public void writeTensor(String name, HostBuffer b) throws IOException {
    expectTensor(name);
    long bytes = header.end(name) - header.begin(name);
    if (b.size() < bytes) {
      throw new IllegalArgumentException(
          "tensor " + name + " has " + bytes + " bytes but its buffer only " + b.size());
    }
    write(b, 0, bytes);
  }

  private void advance(long length) {
    if (closed) {
      throw new IllegalStateException("the safetensors writer is closed");
    }
    if (length > header.dataBytes() - position) {
      throw new IllegalStateException(
          "writing "
              + length
              + " bytes at data offset "
              + position
              + " passes the end of the data ("
              + header.dataBytes()
              + " bytes)");
    }
    position += length;
  }

  /**
   * Checks that every data byte of the header was written, then flushes and closes the stream.
   *
   * @throws IllegalStateException when bytes are missing (the stream is closed all the same)
   */
  public void finish() throws IOException {
    if (closed) {
      throw new IllegalStateException("the safetensors writer is closed");
    }
    if (position != header.dataBytes()) {
      IllegalStateException e =
          new IllegalStateException(
              "the file is incomplete: "
                  + position
                  + " of "
                  + header.dataBytes()
                  + " data bytes written");
      closeQuietly(e);
      throw e;
    }
    closed = true;
    out.close();
  }

  /** Closes the stream; the file is incomplete unless {@link #finish()} ran. Idempotent. */
  @Override
  public void close() throws IOException {
    if (!closed) {
      closed = true;
      out.close();
    }
  }

  private void closeQuietly(Throwable primary) {
    closed = true;
    try {
      out.close();
    } catch (IOException | RuntimeException e) {
      primary.addSuppressed(e);
    }
  }
}
