package io.moeprep.kernels.cuda;

import io.moeprep.kernels.DType;

/**
 * A matrix of rows in device memory: {@code rows x hidden} elements of {@code dtype}, row-major, at
 * the raw device address {@code address}.
 *
 * @param address device address of row 0 (any alignment; the kernels move rows in the widest unit
 *     that the address and the row bytes allow)
 * @param rows number of rows, {@code >= 0}
 * @param hidden elements per row, {@code >= 1}
 * @param dtype element type
 */
public record DeviceRows(long address, long rows, int hidden, DType dtype) {
  /** Bytes of one row. */
  public long rowBytes() {
    return dtype.rowBytes(hidden);
  }
}
