package io.moeprep.spark.sink;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.connector.write.SupportsTruncate;
import org.apache.spark.sql.connector.write.Write;
import org.apache.spark.sql.connector.write.WriteBuilder;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/** Builds the sink's write: appending, or replacing the output after {@link #truncate()}. */
final class ShardWriteBuilder implements SupportsTruncate {
  private final String queryId;
  private final CaseInsensitiveStringMap options;
  private final int[] ordinals;
  private boolean overwrite;

  ShardWriteBuilder(String queryId, CaseInsensitiveStringMap options, int[] ordinals) {
    this.queryId = queryId;
    this.options = options;
    this.ordinals = ordinals;
  }

  /** Replace the output's content when the job commits ({@code mode("overwrite")}). */
  @Override
  public WriteBuilder truncate() {
    overwrite = true;
    return this;
  }

  /**
   * @throws IllegalArgumentException without a {@code path} option, or when it names a file
   */
  @Override
  public Write build() {
    String path = options.get("path");
    if (path == null || path.isBlank()) {
      throw new IllegalArgumentException(
          "option path is missing: write with save(path) or option(\"path\", ...)");
    }
    Configuration conf =
        new Configuration(SparkSession.active().sparkContext().hadoopConfiguration());
    for (Map.Entry<String, String> e : options.asCaseSensitiveMap().entrySet()) {
      if (!e.getKey().equalsIgnoreCase("path")) {
        conf.set(e.getKey(), e.getValue());
      }
    }
    try {
      Path p = new Path(path);
      FileSystem fs = p.getFileSystem(conf);
      Path out = fs.makeQualified(p);
      if (fs.exists(out) && !fs.getFileStatus(out).isDirectory()) {
        throw new IllegalArgumentException(
            "output " + out + " is a file: " + SafetensorsSink.FORMAT + " writes a directory");
      }
      return new ShardBatchWrite(
          out.toString(), queryId, overwrite, ordinals, new HadoopConf(conf));
    } catch (IOException e) {
      throw new UncheckedIOException("cannot reach the output " + path, e);
    }
  }
}
