package io.moeprep.app.cli;

import io.moeprep.kernels.DType;
import picocli.CommandLine.ITypeConverter;

/**
 * Converts a {@code --dtype} value with {@link DType#parse}: the short names ({@code f32, bf16,
 * f16, fp8e4m3, fp8e5m2}) or the enum names, ignoring case.
 */
public final class DTypeOption implements ITypeConverter<DType> {
  /** Converts; an unknown name fails naming the accepted ones. */
  @Override
  public DType convert(String value) {
    return DType.parse(value);
  }
}
