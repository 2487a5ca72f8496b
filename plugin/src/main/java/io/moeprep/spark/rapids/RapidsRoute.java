package io.moeprep.spark.rapids;

import io.moeprep.kernels.BackendChoice;
import io.moeprep.spark.spec.Layout;
import java.io.Serializable;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;
import org.apache.spark.sql.SparkSession;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Which path a permute takes in a session: the CPU or plain CUDA backend on rows, or the RAPIDS
 * route (cudf tables through {@code ColumnarRdd}, permuted on the device by the CUDA kernels).
 *
 * <p>Decided on the driver from the session's settings alone: the RAPIDS Accelerator is active when
 * {@code spark.plugins} lists {@value #SQL_PLUGIN} and that class is loadable from the context
 * class loader. This class never touches cudf or RAPIDS classes (it only asks whether the plugin
 * class exists), so CPU-only and plain-GPU sessions never load them.
 */
public final class RapidsRoute implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(RapidsRoute.class);
  private static final java.util.Set<String> LOGGED = ConcurrentHashMap.newKeySet();

  /** The RAPIDS Accelerator's Spark plugin class. */
  public static final String SQL_PLUGIN = "com.nvidia.spark.SQLPlugin";

  /** The RAPIDS entry point that hands a DataFrame's partitions over as cudf tables. */
  public static final String COLUMNAR_RDD = "com.nvidia.spark.rapids.ColumnarRdd";

  /** The paths of a permute. */
  public enum Path {
    /** No RAPIDS Accelerator: rows through the CPU backend ({@code spark.moeprep.backend=cpu}). */
    CPU,
    /**
     * No RAPIDS Accelerator (or RAPIDS SQL disabled): rows through the CUDA backend where the
     * executor finds a GPU ({@code backend=cuda}, or {@code auto} with a GPU), else the CPU.
     */
    ROWS_AUTO,
    /** RAPIDS active on the GPU: cudf tables, permuted on the device, cudf tables out. */
    RAPIDS_CUDF,
    /**
     * RAPIDS loaded in {@code spark.rapids.sql.mode=explainOnly} (no GPU work): the cudf route is
     * planned and reported, and the result is computed on rows by the backend.
     */
    RAPIDS_EXPLAIN_ONLY
  }

  private final Path path;
  private final boolean pluginListed;
  private final boolean pluginLoadable;
  private final boolean sqlEnabled;
  private final String mode;
  private final BackendChoice backend;
  private final String reason;
  private final Layout layout;

  private RapidsRoute(
      Path path,
      boolean listed,
      boolean loadable,
      boolean sqlEnabled,
      String mode,
      BackendChoice backend,
      String reason) {
    this(path, listed, loadable, sqlEnabled, mode, backend, reason, Layout.ROWS);
  }

  private RapidsRoute(
      Path path,
      boolean listed,
      boolean loadable,
      boolean sqlEnabled,
      String mode,
      BackendChoice backend,
      String reason,
      Layout layout) {
    this.layout = layout;
    this.path = path;
    this.pluginListed = listed;
    this.pluginLoadable = loadable;
    this.sqlEnabled = sqlEnabled;
    this.mode = mode;
    this.backend = backend;
    this.reason = reason;
  }

  /**
   * The route of a permute planned in {@code spark} with the resolved backend choice; logs the
   * decision once per distinct description.
   */
  public static RapidsRoute plan(SparkSession spark, BackendChoice backend) {
    return plan(spark, backend, Layout.ROWS);
  }

  /**
   * The route of a permute planned in {@code spark} with the resolved backend choice, whose data
   * comes out in {@code layout} (named in the description); logs the decision once per distinct
   * description.
   */
  public static RapidsRoute plan(SparkSession spark, BackendChoice backend, Layout layout) {
    Function<String, String> conf =
        k -> {
          String v = spark.conf().get(k, null);
          return v != null ? v : spark.sparkContext().getConf().get(k, null);
        };
    RapidsRoute r = decide(conf, backend, RapidsRoute::loadable).in(layout);
    r.logOnce();
    return r;
  }

  /**
   * The decision from settings ({@code conf} returns a value or {@code null}) and a class probe;
   * pure, for tests.
   */
  static RapidsRoute decide(
      Function<String, String> conf,
      BackendChoice backend,
      java.util.function.Predicate<String> classLoadable) {
    backend = backend == null ? BackendChoice.AUTO : backend;
    String plugins = conf.apply("spark.plugins");
    boolean listed =
        plugins != null
            && Arrays.stream(plugins.split(",")).map(String::trim).anyMatch(SQL_PLUGIN::equals);
    boolean loadable = listed && classLoadable.test(SQL_PLUGIN);
    String enabledValue = conf.apply("spark.rapids.sql.enabled");
    boolean enabled = enabledValue == null || Boolean.parseBoolean(enabledValue.trim());
    String modeValue = conf.apply("spark.rapids.sql.mode");
    String mode = modeValue == null ? "executeongpu" : modeValue.trim().toLowerCase(Locale.ROOT);
    Path rows = backend == BackendChoice.CPU ? Path.CPU : Path.ROWS_AUTO;
    if (!listed) {
      return new RapidsRoute(rows, false, false, enabled, mode, backend, "no RAPIDS Accelerator");
    }
    if (!loadable) {
      return new RapidsRoute(
          rows,
          true,
          false,
          enabled,
          mode,
          backend,
          "spark.plugins lists " + SQL_PLUGIN + " but the class is not on the classpath");
    }
    if (!enabled) {
      return new RapidsRoute(
          rows, true, true, false, mode, backend, "spark.rapids.sql.enabled=false");
    }
    if (mode.equals("explainonly")) {
      return new RapidsRoute(
          Path.RAPIDS_EXPLAIN_ONLY,
          true,
          true,
          true,
          mode,
          backend,
          "spark.rapids.sql.mode=explainOnly: RAPIDS runs nothing on the GPU");
    }
    if (backend == BackendChoice.CPU) {
      return new RapidsRoute(
          Path.CPU, true, true, true, mode, backend, "spark.moeprep.backend=cpu");
    }
    return new RapidsRoute(
        Path.RAPIDS_CUDF, true, true, true, mode, backend, "RAPIDS Accelerator active");
  }

  /** This route for a permute whose data comes out in {@code layout}. */
  RapidsRoute in(Layout layout) {
    return new RapidsRoute(
        path, pluginListed, pluginLoadable, sqlEnabled, mode, backend, reason, layout);
  }

  private static boolean loadable(String className) {
    ClassLoader cl = Thread.currentThread().getContextClassLoader();
    if (cl == null) {
      cl = RapidsRoute.class.getClassLoader();
    }
    try {
      Class.forName(className, false, cl);
      return true;
    } catch (ClassNotFoundException | LinkageError e) {
      return false;
    }
  }

  /** The path taken. */
  public Path path() {
    return path;
  }

  /** True when the permute runs on cudf tables ({@link Path#RAPIDS_CUDF}). */
  public boolean usesCudf() {
    return path == Path.RAPIDS_CUDF;
  }

  /** True when the RAPIDS Accelerator is loaded (active, explain-only, or SQL disabled). */
  public boolean rapidsLoaded() {
    return pluginListed && pluginLoadable;
  }

  /** The lower-cased {@code spark.rapids.sql.mode} ({@code executeongpu} when unset). */
  public String rapidsMode() {
    return mode;
  }

  /** Whether {@code spark.rapids.sql.enabled} is true (the default). */
  public boolean rapidsSqlEnabled() {
    return sqlEnabled;
  }

  /** Why this path was chosen. */
  public String reason() {
    return reason;
  }

  /**
   * One line for logs and {@code PermuteOutput.executionPath()}, such as {@code MoePrep path
   * RAPIDS_EXPLAIN_ONLY: planned cudf route ...}.
   */
  public String describe() {
    String b = backend.name().toLowerCase(Locale.ROOT);
    String l = layout.name().toLowerCase(Locale.ROOT) + " layout";
    return switch (path) {
      case CPU -> "MoePrep path CPU: " + l + " on the cpu backend (" + reason + ")";
      case ROWS_AUTO ->
          "MoePrep path ROWS_AUTO: "
              + l
              + " on backend "
              + b
              + " (CUDA where the executor has a GPU, for auto; "
              + reason
              + ")";
      case RAPIDS_CUDF ->
          "MoePrep path RAPIDS_CUDF: rank partitions as cudf tables ("
              + COLUMNAR_RDD
              + "), hidden and expert_ids child buffers permuted on the device by the CUDA"
              + " kernels on the task's per-thread default stream, outputs in RMM, cudf tables"
              + " out (RapidsPermute.tables); DataFrame outputs run on rows with backend "
              + b;
      case RAPIDS_EXPLAIN_ONLY ->
          "MoePrep path RAPIDS_EXPLAIN_ONLY: would take rank partitions as cudf tables ("
              + COLUMNAR_RDD
              + ") and permute them on the device with the CUDA kernels; "
              + reason
              + ", so the result is computed in the "
              + l
              + " with backend "
              + b
              + " (the CPU where no GPU)";
    };
  }

  private void logOnce() {
    String d = describe();
    if (LOGGED.add(d)) {
      if (path == Path.RAPIDS_EXPLAIN_ONLY) {
        LOG.warn("moeprep: {}", d);
      } else {
        LOG.info("moeprep: {}", d);
      }
    }
  }

  @Override
  public String toString() {
    return describe();
  }
}
