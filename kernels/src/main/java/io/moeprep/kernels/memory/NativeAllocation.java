package io.moeprep.kernels.memory;

import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ownership of one native block (host, pinned or device memory): freed exactly once, by an
 * explicit {@link #close()} or, as a logged leak, by a {@link Cleaner} when its owner became
 * unreachable; counted in its kind's {@link Ledger} while it lives. The buffer classes hold one
 * each, so that the rules are written once.
 */
public final class NativeAllocation {
  private static final Logger LOG = LoggerFactory.getLogger(NativeAllocation.class);
  private static final Cleaner CLEANER = Cleaner.create();

  /** Live bytes and blocks of one kind of memory, for leak checks. */
  public static final class Ledger {
    private final String kind;
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicLong live = new AtomicLong();
    private final AtomicLong ids = new AtomicLong();

    /** A ledger for blocks named {@code kind#id}. */
    public Ledger(String kind) {
      this.kind = kind;
    }

    /** Bytes held by open blocks. */
    public long bytesInUse() {
      return bytes.get();
    }

    /** Open blocks. */
    public long liveCount() {
      return live.get();
    }
  }

  /** Gives a block back to where it came from. */
  @FunctionalInterface
  public interface Free {
    void free(long address);
  }

  private final State state;
  private final Cleaner.Cleanable cleanable;

  /**
   * Takes ownership of {@code size} bytes at {@code address} for {@code owner}; {@code free} must
   * not refer to {@code owner} (else the Cleaner could never run).
   */
  public NativeAllocation(Object owner, Ledger ledger, long address, long size, Free free) {
    this.state = new State(ledger, ledger.ids.incrementAndGet(), address, size, free);
    ledger.bytes.addAndGet(size);
    ledger.live.incrementAndGet();
    this.cleanable = CLEANER.register(owner, state);
  }

  /** {@code kind#id}, unique per kind in this process. */
  public String label() {
    return state.ledger.kind + "#" + state.id;
  }

  /** The address; throws once closed. */
  public long address() {
    if (state.closed.get()) {
      throw new IllegalStateException(label() + "[" + state.size + " bytes] is closed");
    }
    return state.address;
  }

  /** True once freed. */
  public boolean isClosed() {
    return state.closed.get();
  }

  /** Frees the block; later calls do nothing. */
  public void close() {
    state.explicit = true;
    cleanable.clean();
  }

  private static final class State implements Runnable {
    final Ledger ledger;
    final long id;
    final long address;
    final long size;
    final Free free;
    final AtomicBoolean closed = new AtomicBoolean();
    volatile boolean explicit;

    State(Ledger ledger, long id, long address, long size, Free free) {
      this.ledger = ledger;
      this.id = id;
      this.address = address;
      this.size = size;
      this.free = free;
    }

    @Override
    public void run() {
      if (!closed.compareAndSet(false, true)) {
        return;
      }
      if (!explicit) {
        LOG.warn("leak: {}#{} of {} bytes was never closed", ledger.kind, id, size);
      }
      try {
        if (address != 0) {
          free.free(address);
        }
      } finally {
        ledger.bytes.addAndGet(-size);
        ledger.live.decrementAndGet();
      }
    }
  }
}
