package io.moeprep.spark.spec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import io.moeprep.kernels.memory.HostBuffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.Test;

/** The dispatch wire format: what the map side writes, the rank side reads back, byte for byte. */
class DispatchChunkTest {

  @Test
  void writtenTokensReadBackThroughARow() {
    int k = 3;
    long rowBytes = 6;
    DispatchChunk.Writer w = new DispatchChunk.Writer(1, 42, 7L, k, rowBytes, true, 1, 40);
    for (int t = 0; t < 20; t++) { // past the first growth of every array
      byte[] h = new byte[(int) rowBytes];
      Arrays.fill(h, (byte) t);
      w.add(1000L + t, new int[] {t, -1, t + 1}, new float[] {t * 0.5f, 0f, -1f}, h);
    }
    assertEquals(20, w.tokens());
    assertEquals(20 * rowBytes, w.hiddenBytes());
    Row row = w.finish().toRow();
    assertEquals(DispatchChunk.schema().size(), row.length());
    assertEquals(7L, DispatchChunk.batchOf(row));
    DispatchChunk c = DispatchChunk.of(row);
    assertEquals(1, c.rank());
    assertEquals(42, c.partitionKey());
    assertEquals(20, c.numTokens());
    assertEquals(8 * 20, c.tokenIds().length);
    ByteBuffer ids = ByteBuffer.wrap(c.expertIds()).order(ByteOrder.LITTLE_ENDIAN);
    ByteBuffer probs = ByteBuffer.wrap(c.probs()).order(ByteOrder.LITTLE_ENDIAN);
    for (int t = 0; t < 20; t++) {
      assertEquals(1000L + t, c.tokenId(t));
      assertEquals(t, ids.getInt(4 * (t * k)));
      assertEquals(-1, ids.getInt(4 * (t * k + 1)));
      assertEquals(t * 0.5f, probs.getFloat(4 * (t * k)));
    }
    try (HostBuffer tokens = HostBuffer.allocate(2 * rowBytes);
        HostBuffer routing = HostBuffer.allocate(2 * 4 * k);
        HostBuffer p = HostBuffer.allocate(2 * 4 * k)) {
      c.copyToken(13, k, rowBytes, tokens, routing, p, 1);
      assertEquals(13, tokens.getByte(rowBytes));
      assertEquals(14, routing.getInt(4 * k + 8));
      assertEquals(6.5f, p.getFloat(4 * k));
    }
  }

  @Test
  void anEmptyChunkOnlySaysThatTheBatchExists() {
    DispatchChunk c = new DispatchChunk.Writer(0, 5, 3L, 2, 4, false, 0, 16).finish();
    assertEquals(0, c.numTokens());
    assertArrayEquals(new byte[0], c.tokenIds());
    assertArrayEquals(new byte[0], c.hidden());
    assertNull(c.probs());
    assertNull(DispatchChunk.of(c.toRow()).probs());
  }
}
