package io.moeprep.spark.exec;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.kernels.Backends;
import io.moeprep.kernels.KernelTuning;
import io.moeprep.spark.spec.TuningSettings;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.TaskContext;
import org.apache.spark.resource.ResourceInformation;

/**
 * The backend per (choice, device, tuning), chosen once and shared by the tasks that ask for the
 * same; and the device of one task, from its own resources. No task's choice affects another's: the
 * only state is the cache, keyed by everything a choice depends on, so that tasks assigned
 * different GPUs get backends on their own GPUs, concurrently, on any number of GPUs.
 */
public final class KernelSelection {
  /** Chooses a backend: {@link Backends#choose(BackendChoice, int, KernelTuning)} in production. */
  @FunctionalInterface
  public interface Chooser {
    /** The backend for {@code choice} on GPU {@code device} ({@code -1}: none or device 0). */
    Backends.Selection choose(BackendChoice choice, int device, KernelTuning tuning);
  }

  /** What a backend is chosen for: the device is {@code -1} for the CPU or the default GPU. */
  private record Key(BackendChoice choice, int device, TuningSettings tuning) {}

  private final Chooser chooser;
  private final ConcurrentHashMap<Key, Backends.Selection> chosen = new ConcurrentHashMap<>();

  /** A selection that chooses with {@code chooser}. */
  public KernelSelection(Chooser chooser) {
    this.chooser = chooser;
  }

  /**
   * The backend for {@code choice} on GPU {@code device} with {@code tuning}, chosen once per
   * (choice, device, tuning); {@code CPU} ignores the device.
   */
  public Backends.Selection select(BackendChoice choice, int device, TuningSettings tuning) {
    int d = choice == BackendChoice.CPU ? -1 : device;
    return chosen.computeIfAbsent(
        new Key(choice, d, tuning),
        k -> chooser.choose(k.choice(), k.device(), k.tuning().kernelTuning()));
  }

  /**
   * The GPU ordinal that Spark's resource scheduling gave the task ({@code
   * spark.task.resource.gpu.*}: the first address of its {@code gpu} resource), or {@code fallback}
   * when the task has none, no usable address, or is {@code null}. Never throws.
   */
  public static int taskDevice(TaskContext ctx, int fallback) {
    if (ctx == null) {
      return fallback;
    }
    try {
      ResourceInformation gpus = ctx.resourcesJMap().get("gpu");
      if (gpus != null && gpus.addresses().length > 0) {
        return Integer.parseInt(gpus.addresses()[0].trim());
      }
    } catch (RuntimeException e) {
      // no usable address: the fallback
    }
    return fallback;
  }
}
