package io.moeprep.spark.exec;

import io.moeprep.kernels.MoeKernels;
import io.moeprep.kernels.contract.UnpermuteInput;
import io.moeprep.kernels.memory.HostBuffer;
import io.moeprep.spark.spec.PermuteSpec;
import io.moeprep.spark.spec.ProblemShape;
import io.moeprep.spark.spec.RunSettings;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;

/**
 * The combine side of unpermute. A partition holds whole batches of {@link
 * io.moeprep.spark.spec.Schemas#COMBINE_INPUT} records sorted by (batch, token_id, slot): for each
 * token its row-map markers ({@code slot = -1}, giving K) and then its expert-output slots. Per
 * batch it lays the slots out as one single-device {@code expertOut} tensor with its row-id map and
 * runs the unpermute kernel, so the result equals a single-device combine bit for bit.
 */
public final class CombineRunner implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;

  private static final int BATCH = 0;
  private static final int TOKEN = 1;
  private static final int SLOT = 2;
  private static final int K = 3;
  private static final int PROB = 4;
  private static final int HIDDEN = 5;

  private final PermuteSpec spec;
  private final BatchCounters counters;

  /** The combine of {@code spec}'s shape, run with its settings. */
  public CombineRunner(PermuteSpec spec) {
    this(spec, null);
  }

  /**
   * The combine of {@code spec}'s shape, run with its settings, counting its batches in {@code
   * counters} (or not, when null).
   */
  public CombineRunner(PermuteSpec spec, BatchCounters counters) {
    this.spec = spec;
    this.counters = counters;
  }

  @Override
  public Iterator<Row> call(Iterator<Row> in) {
    BatchReader reader = new BatchReader(in, BATCH);
    RunSettings s = spec.settings();
    MoeKernels kernels = ExecutorRuntime.kernels(s.backend(), s.tuning(), TaskContext.get());
    return new Iterator<>() {
      private Iterator<Row> current = Collections.emptyIterator();

      @Override
      public boolean hasNext() {
        while (!current.hasNext() && reader.hasNext()) {
          current = combine(kernels, reader.next()).iterator();
        }
        return current.hasNext();
      }

      @Override
      public Row next() {
        hasNext();
        return current.next();
      }
    };
  }

  private List<Row> combine(MoeKernels kernels, List<Row> records) {
    ProblemShape shape = spec.shape();
    long rowBytes = shape.rowBytes();
    long batch = records.get(0).getLong(BATCH);
    int k = -1;
    List<Long> tokens = new ArrayList<>();
    List<Row> slots = new ArrayList<>();
    List<Integer> slotToken = new ArrayList<>();
    long lastToken = Long.MIN_VALUE;
    int withProbs = 0;
    for (Row r : records) {
      long t = r.getLong(TOKEN);
      int slot = r.getInt(SLOT);
      if (slot < 0) {
        int kk = r.getInt(K);
        if (k >= 0 && kk != k) {
          throw new IllegalArgumentException(
              "token_id="
                  + t
                  + ": the row map gives "
                  + kk
                  + " slots but another token of batch "
                  + batch
                  + " has "
                  + k);
        }
        k = kk;
        if (t != lastToken) {
          tokens.add(t);
          lastToken = t;
        }
        continue;
      }
      if (t != lastToken) {
        throw new IllegalArgumentException(
            "token_id="
                + t
                + ": expert output for slot "
                + slot
                + " but the token is not in the row map of batch "
                + batch);
      }
      if (slot >= k) {
        throw new IllegalArgumentException(
            "token_id=" + t + ": expert output slot " + slot + " is out of range [0, " + k + ")");
      }
      if (!slots.isEmpty()) {
        Row prev = slots.get(slots.size() - 1);
        if (prev.getLong(TOKEN) == t && prev.getInt(SLOT) == slot) {
          throw new IllegalArgumentException(
              "token_id=" + t + ": two expert outputs for slot " + slot + " in batch " + batch);
        }
      }
      if (r.isNullAt(HIDDEN) || ((byte[]) r.get(HIDDEN)).length != rowBytes) {
        throw new IllegalArgumentException(
            "token_id="
                + t
                + ": expert output of slot "
                + slot
                + " has "
                + (r.isNullAt(HIDDEN) ? "no" : ((byte[]) r.get(HIDDEN)).length)
                + " bytes, expected "
                + rowBytes);
      }
      if (!r.isNullAt(PROB)) {
        withProbs++;
      }
      slots.add(r);
      slotToken.add(tokens.size() - 1);
    }
    if (withProbs != 0 && withProbs != slots.size()) {
      throw new IllegalArgumentException(
          "batch " + batch + ": some expert outputs have a prob and others not: give all or none");
    }
    records.clear();
    int n = tokens.size();
    int numOut = slots.size();
    List<Row> out = new ArrayList<>(n);
    try (HostBuffer expertOut = HostBuffer.allocate(numOut * rowBytes);
        HostBuffer rowIds = HostBuffer.allocate(4L * n * k);
        HostBuffer probs = withProbs > 0 ? HostBuffer.allocateZeroed(4L * n * k) : null) {
      rowIds.fill(0, rowIds.size(), (byte) 0xFF);
      for (int i = 0; i < numOut; i++) {
        Row r = slots.get(i);
        long s = (long) slotToken.get(i) * k + r.getInt(SLOT);
        rowIds.putInt(4 * s, i);
        if (probs != null) {
          probs.putFloat(4 * s, r.getFloat(PROB));
        }
        expertOut.copyFrom(i * rowBytes, (byte[]) r.get(HIDDEN), 0, rowBytes);
      }
      slots.clear();
      UnpermuteInput input =
          new UnpermuteInput(expertOut, numOut, rowIds, n, k, shape.hidden(), shape.dtype(), probs);
      String where =
          "combine partition " + org.apache.spark.TaskContext.getPartitionId() + ", batch " + batch;
      String[] ranOn = {""};
      try (HostBuffer combined =
          ExecutorRuntime.runBatch(
              kernels, spec.settings(), where, kk -> kk.unpermute(input), b -> ranOn[0] = b)) {
        ExecutorRuntime.ROWS_COMBINED.inc(n);
        if (counters != null) {
          counters.batch(n, n * rowBytes, ranOn[0]);
        }
        for (int t = 0; t < n; t++) {
          out.add(
              RowFactory.create(batch, tokens.get(t), combined.toBytes(t * rowBytes, rowBytes)));
        }
      }
    }
    return out;
  }
}
