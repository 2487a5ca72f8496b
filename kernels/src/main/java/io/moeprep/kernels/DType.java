package io.moeprep.kernels;

import java.util.Locale;

/**
 * Element types of token and expert-output rows. FP8 types are moved as bytes and never converted
 * by permute; unpermute does not accept them.
 */
public enum DType {
  /** IEEE binary32, 4 bytes. */
  F32(4, "f32"),
  /** bfloat16 (upper half of a binary32), 2 bytes; stored in .npy files as {@code <u2} bits. */
  BF16(2, "bf16"),
  /** IEEE binary16, 2 bytes. */
  F16(2, "f16"),
  /** FP8 E4M3 (OCP), 1 byte, copied as bytes. */
  FP8_E4M3(1, "fp8e4m3"),
  /** FP8 E5M2 (OCP), 1 byte, copied as bytes. */
  FP8_E5M2(1, "fp8e5m2");

  private final int bytes;
  private final String cliName;

  DType(int bytes, String cliName) {
    this.bytes = bytes;
    this.cliName = cliName;
  }

  /** Size of one element in bytes. */
  public int bytes() {
    return bytes;
  }

  /** Bytes of one row of {@code hidden} elements: {@code hidden * bytes()}, in 64 bits. */
  public long rowBytes(long hidden) {
    return hidden * bytes;
  }

  /** The short name used on command lines and in configuration ({@code bf16}, {@code fp8e4m3}). */
  public String cliName() {
    return cliName;
  }

  /** True for the FP8 types, which are moved but never combined. */
  public boolean isFp8() {
    return this == FP8_E4M3 || this == FP8_E5M2;
  }

  /**
   * Parses a short name ({@code f32, bf16, f16, fp8e4m3, fp8e5m2}) or an enum name, ignoring case.
   *
   * @throws IllegalArgumentException naming the accepted values
   */
  public static DType parse(String name) {
    String n = name.trim().toLowerCase(Locale.ROOT).replace("_", "");
    for (DType d : values()) {
      if (d.cliName.equals(n) || d.name().toLowerCase(Locale.ROOT).replace("_", "").equals(n)) {
        return d;
      }
    }
    throw new IllegalArgumentException(
        "dtype '" + name + "' is invalid: must be one of f32, bf16, f16, fp8e4m3, fp8e5m2");
  }
}
