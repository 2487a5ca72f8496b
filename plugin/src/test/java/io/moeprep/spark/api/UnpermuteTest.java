package io.moeprep.spark.api;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.moeprep.kernels.DType;
import io.moeprep.kernels.contract.PermuteOptions;
import io.moeprep.kernels.contract.PermuteResult;
import io.moeprep.kernels.cpu.ReferenceBatch;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.kernels.testing.Seeds;
import io.moeprep.spark.KernelReference;
import io.moeprep.spark.SparkSessions;
import io.moeprep.spark.TokenBatch;
import io.moeprep.spark.spec.Dispatch;
import io.moeprep.spark.spec.Layout;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.Schemas;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Local-mode unpermute: expert outputs (a function of the expert and the permuted row) combined by
 * Spark equal a single-device unpermute of the same batch, bit for bit.
 */
class UnpermuteTest {
  private final SparkSession spark = SparkSessions.local();

  /** The stand-in for an expert: reverses the elements of odd experts, flips bits of even ones. */
  static byte[] expert(int e, byte[] row, int elemBytes) {
    byte[] out = row.clone();
    int h = row.length / elemBytes;
    for (int i = 0; i < h; i++) {
      for (int b = 0; b < elemBytes; b++) {
        out[i * elemBytes + b] =
            e % 2 == 1 ? row[(h - 1 - i) * elemBytes + b] : (byte) (row[i * elemBytes + b] ^ e);
      }
    }
    return out;
  }

  @ParameterizedTest
  @CsvSource({
    "ROWS, ALL_TO_ALL, F32, false",
    "PACKED, ALL_TO_ALL, BF16, false",
    "ROWS, ALL_GATHER, F16, true",
    "PACKED, ALL_TO_ALL, BF16, true"
  })
  void combineEqualsSingleDevice(Layout layout, Dispatch dispatch, DType dtype, boolean cap) {
    SplittableRandom rnd = Seeds.fresh("combine " + layout + " " + dispatch + " " + dtype);
    int h = 13;
    int e = 8;
    int k = 3;
    TokenBatch tb = TokenBatch.random(rnd, 3, 1 + rnd.nextInt(90), h, dtype, k, e, 0.3);
    PermuteSpec.Builder b =
        PermuteSpec.builder(e, 4).hidden(h, dtype).topK(k).dispatch(dispatch).layout(layout);
    if (cap) {
      b.perExpertCapacity(4, true).maxBlockBytes(3L * h * dtype.bytes());
    }
    PermuteSpec spec = b.build();
    PermuteOutput out = MoePrep.permute(tb.toDataFrame(spark, true), spec);
    int eb = dtype.bytes();
    Dataset<Row> expertOut;
    if (layout == Layout.ROWS) {
      expertOut =
          out.rows()
              .map(
                  (MapFunction<Row, Row>)
                      r -> {
                        Object[] v = new Object[r.length()];
                        for (int i = 0; i < v.length; i++) {
                          v[i] = r.get(i);
                        }
                        v[8] = expert(r.getInt(3), (byte[]) r.get(8), eb);
                        return RowFactory.create(v);
                      },
                  Encoders.row(Schemas.ROWS));
    } else {
      long rowBytes = spec.shape().rowBytes();
      expertOut =
          out.packed()
              .map(
                  (MapFunction<Row, Row>)
                      r -> {
                        Object[] v = new Object[r.length()];
                        for (int i = 0; i < v.length; i++) {
                          v[i] = r.get(i);
                        }
                        byte[] hid = ((byte[]) r.get(10)).clone();
                        for (int j = 0; j < r.getInt(6); j++) {
                          byte[] one =
                              java.util.Arrays.copyOfRange(
                                  hid, (int) (j * rowBytes), (int) ((j + 1) * rowBytes));
                          System.arraycopy(
                              expert(r.getInt(2), one, eb),
                              0,
                              hid,
                              (int) (j * rowBytes),
                              one.length);
                        }
                        v[10] = hid;
                        return RowFactory.create(v);
                      },
                  Encoders.row(Schemas.PACKED));
    }
    List<Row> combined = MoePrep.unpermute(expertOut, out.rowMap(), spec).collectAsList();
    Map<String, byte[]> got = new HashMap<>();
    for (Row r : combined) {
      got.put(r.getLong(0) + "/" + r.getLong(1), (byte[]) r.get(2));
    }
    assertEquals(tb.tokens.size(), got.size(), "one combined row per token");
    long rowBytes = spec.shape().rowBytes();
    for (long batch : tb.batchIds()) {
      List<TokenBatch.Token> toks = tb.batch(batch);
      int n = toks.size();
      PermuteOptions single = PermuteOptions.of(e).withCapacity(spec.shape().capacityPolicy());
      try (ReferenceBatch in = KernelReference.batch(tb, batch, true);
          PermuteResult p = KernelReference.permute(in, single);
          HostBuffer eo = HostBuffer.allocate(p.numOut() * rowBytes)) {
        for (long i = 0; i < p.numOut(); i++) {
          int ex = 0;
          while (p.layout().offset(ex + 1) <= i) {
            ex++;
          }
          byte[] y = expert(ex, KernelReference.row(p.permuted(), i, rowBytes), eb);
          for (int x = 0; x < rowBytes; x++) {
            eo.putByte(i * rowBytes + x, y[x]);
          }
        }
        try (HostBuffer exp = in.unpermute(eo, p.numOut(), p.rowIdMap())) {
          for (int t = 0; t < n; t++) {
            assertArrayEquals(
                KernelReference.row(exp, t, rowBytes),
                got.get(batch + "/" + toks.get(t).id()),
                "batch " + batch + " token " + toks.get(t).id());
          }
        }
      }
    }
  }
}
