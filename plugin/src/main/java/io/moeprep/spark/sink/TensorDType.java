package io.moeprep.spark.sink;

import io.moeprep.kernels.DType;

/**
 * The element types that the sink writes, named as the safetensors format names them ({@link
 * #name()} is the header's {@code dtype} string). Every element is little-endian.
 */
public enum TensorDType {
  /** IEEE binary32, 4 bytes. */
  F32(4),
  /** bfloat16, 2 bytes. */
  BF16(2),
  /** IEEE binary16, 2 bytes. */
  F16(2),
  /** FP8 E4M3 (OCP), 1 byte. */
  F8_E4M3(1),
  /** FP8 E5M2 (OCP), 1 byte. */
  F8_E5M2(1),
  /** Signed 32-bit integer, 4 bytes. */
  I32(4),
  /** Signed 64-bit integer, 8 bytes. */
  I64(8);

  private final int bytes;

  TensorDType(int bytes) {
    this.bytes = bytes;
  }

  /** Size of one element in bytes (1, 2, 4 or 8). */
  public int bytes() {
    return bytes;
  }

  /** The safetensors type of MoePrep's element type {@code d} ({@code FP8_E4M3 -> F8_E4M3}). */
  public static TensorDType of(DType d) {
    return switch (d) {
      case F32 -> F32;
      case BF16 -> BF16;
      case F16 -> F16;
      case FP8_E4M3 -> F8_E4M3;
      case FP8_E5M2 -> F8_E5M2;
    };
  }
}
