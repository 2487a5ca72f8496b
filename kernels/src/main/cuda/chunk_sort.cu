// Chunk sort: rows split into consecutive chunks are emitted in a new chunk order, probs alongside.
#include "common.cuh"

namespace moeprep {

// Thread mapping: `lanes` threads per output row (RowTile), contiguous rows per block; each
// row finds its chunk by binary search in dst_offsets and copies its source row unit by unit;
// lane 0 moves the row's prob.
// Shapes: rows [numRows][units] units of V bytes; dst_offsets int64 [chunks+1] (first output row
// of each chunk in the new order); src_starts int64 [chunks] (first source row of the chunk
// emitted at that position); out [numRows][units]; probs, out_probs float32 [numRows] or null.
template <int V>
__device__ void chunk_sort_rows(const void* __restrict__ rows, const float* __restrict__ probs,
                                const long long* __restrict__ dst_offsets,
                                const long long* __restrict__ src_starts, int32_t chunks,
                                void* __restrict__ out, float* __restrict__ out_probs,
                                int64_t num_rows, int64_t units, int32_t lanes) {
  using U = typename Unit<V>::type;
  const RowTile tile(lanes, num_rows);
  const U* src_base = static_cast<const U*>(rows);
  U* dst_base = static_cast<U*>(out);
  for (int64_t g = tile.group_begin; g < tile.group_end; g++) {
    const int64_t i = tile.row(g);
    if (i >= num_rows) {
      break;
    }
    // last chunk c with dst_offsets[c] <= i (empty chunks are skipped over)
    int32_t lo = 0;
    int32_t hi = chunks;
    while (hi - lo > 1) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (dst_offsets[mid] <= i) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const int64_t src_row = src_starts[lo] + (i - dst_offsets[lo]);
    const U* src = src_base + src_row * units;
    U* dst = dst_base + i * units;
    for (int64_t u = tile.lane; u < units; u += lanes) {
      dst[u] = src[u];
    }
    if (probs != nullptr && tile.lane == 0) {
      out_probs[i] = probs[src_row];
    }
  }
}

}  // namespace moeprep

using namespace moeprep;

#define MOEPREP_CHUNK_SORT(V)                                                                    \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_chunk_sort_rows_v##V(const void* rows, const float* probs,                         \
                                   const long long* dst_offsets, const long long* src_starts,    \
                                   int32_t chunks, void* out, float* out_probs,                  \
                                   int64_t num_rows, int64_t units, int32_t lanes) {             \
    chunk_sort_rows<V>(rows, probs, dst_offsets, src_starts, chunks, out, out_probs, num_rows,   \
                       units, lanes);                                                            \
  }
MOEPREP_CHUNK_SORT(16)
MOEPREP_CHUNK_SORT(8)
MOEPREP_CHUNK_SORT(4)
MOEPREP_CHUNK_SORT(2)
MOEPREP_CHUNK_SORT(1)
