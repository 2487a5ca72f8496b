package io.moeprep.app.job;

import io.moeprep.spark.sink.SafetensorsFile;
import io.moeprep.spark.sink.ShardSchema;
import java.io.IOException;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/** The safetensors files of a permute written with {@code --format safetensors}. */
final class ShardFiles {
  private static final Pattern NAME = Pattern.compile("rank=(\\d+)/batch=(\\d+)\\.safetensors$");

  private ShardFiles() {}

  /** The file of (rank, batch) under {@code data}. */
  static SafetensorsFile open(Configuration hadoop, String data, int rank, long batch)
      throws IOException {
    Path p = new Path(data, "rank=" + rank + "/batch=" + batch + ".safetensors");
    return SafetensorsFile.open(p.getFileSystem(hadoop), p);
  }

  /** Output rows (the {@code permuted} tensor's rows, padding included) per rank under data. */
  static Map<Integer, Long> rowsPerRank(Configuration hadoop, String data) throws IOException {
    Path root = new Path(data);
    FileSystem fs = root.getFileSystem(hadoop);
    Map<Integer, Long> rows = new TreeMap<>();
    for (Path p : JobContext.visibleFiles(fs, root, Integer.MAX_VALUE)) {
      Matcher m = NAME.matcher(p.toString());
      if (m.find()) {
        long n = SafetensorsFile.open(fs, p).entry(ShardSchema.PERMUTED).shape()[0];
        rows.merge(Integer.parseInt(m.group(1)), n, Long::sum);
      }
    }
    return rows;
  }
}
