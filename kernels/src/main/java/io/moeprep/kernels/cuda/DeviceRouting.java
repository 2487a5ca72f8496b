package io.moeprep.kernels.cuda;

/**
 * A batch's routing in device memory: {@code numTokens x topK} slots.
 *
 * @param expertIds device address of the int32 expert ids ({@code -1}: no expert), 4-byte aligned
 * @param probs device address of the float32 probs, or {@code 0} for none
 * @param numTokens tokens of the batch, {@code >= 0}
 * @param topK slots per token, {@code >= 1}
 */
public record DeviceRouting(long expertIds, long probs, long numTokens, int topK) {
  /** {@code numTokens x topK}. */
  public long slots() {
    return numTokens * topK;
  }

  /** Whether the batch has probs. */
  public boolean withProbs() {
    return probs != 0;
  }
}
