// Permute's data movement: each source token row is read once and written to each of its kept
// output rows (the row map comes from routing_map.cu); padding rows are written as zeros.
#include "common.cuh"

namespace moeprep {

// Thread mapping: `lanes` threads per token row (RowTile), rows_per_block = blockDim.x / lanes
// tokens per block at a time, each block over a contiguous range of tokens. Each thread loads up
// to kUnroll units of its token (units lane, lane + lanes, ...) into registers, then stores them
// to every output row of the token's K slots. Tokens without a kept slot are not read.
// Shapes: tokens [n][units] units of V bytes; row_id_map int32 [n][k] (-1: no row);
// out [numOut][units]. 64-bit row and unit indices.
template <int V, int kUnroll>
__device__ void permute_rows(const void* __restrict__ tokens, const int32_t* __restrict__ row_id_map,
                             void* __restrict__ out, int64_t n, int32_t k, int64_t units,
                             int32_t lanes) {
  using U = typename Unit<V>::type;
  const RowTile tile(lanes, n);
  const U* src_base = static_cast<const U*>(tokens);
  U* dst_base = static_cast<U*>(out);
  for (int64_t g = tile.group_begin; g < tile.group_end; g++) {
    const int64_t t = tile.row(g);
    if (t >= n) {
      break;
    }
    const U* src = src_base + t * units;
    const int32_t* rows = row_id_map + t * k;
    if (g + 1 < tile.group_end && tile.lane == 0) {
      prefetch_l1(row_id_map + tile.row(g + 1) * k);
    }
    bool kept = false;
    for (int32_t s = 0; s < k && !kept; s++) {
      kept = rows[s] >= 0;
    }
    if (!kept) {
      continue;  // masked or dropped everywhere: the row is not read
    }
    for (int64_t u0 = tile.lane; u0 < units; u0 += static_cast<int64_t>(lanes) * kUnroll) {
      U v[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
        if (u < units) {
          v[j] = src[u];
        }
      }
      for (int32_t s = 0; s < k; s++) {
        const int32_t row = rows[s];
        if (row < 0) {
          continue;
        }
        U* dst = dst_base + static_cast<int64_t>(row) * units;
#pragma unroll
        for (int j = 0; j < kUnroll; j++) {
          const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
          if (u < units) {
            dst[u] = v[j];
          }
        }
      }
    }
  }
}

// Thread mapping: `lanes` threads per output row (RowTile), contiguous rows per block; rows
// whose source token is -1 (padding) are set to zero, the others are left alone.
// Shapes: src_token int64 [num_out]; out [num_out][units] units of V bytes.
template <int V>
__device__ void zero_padding_rows(const long long* __restrict__ src_token, void* __restrict__ out,
                                  int64_t num_out, int64_t units, int32_t lanes) {
  using U = typename Unit<V>::type;
  const RowTile tile(lanes, num_out);
  U* dst_base = static_cast<U*>(out);
  for (int64_t g = tile.group_begin; g < tile.group_end; g++) {
    const int64_t i = tile.row(g);
    if (i >= num_out) {
      break;
    }
    if (src_token[i] >= 0) {
      continue;
    }
    U* dst = dst_base + i * units;
    U zero;
    memset(&zero, 0, sizeof(U));
    for (int64_t u = tile.lane; u < units; u += lanes) {
      dst[u] = zero;
    }
  }
}

}  // namespace moeprep

using namespace moeprep;

// One instantiation per unit size V; kUnroll units per thread in flight (8 for 16-byte units).
#define MOEPREP_PERMUTE(V, UNROLL)                                                               \
  extern "C" __global__ void __launch_bounds__(kBlockThreads, 1)                                 \
      moeprep_permute_rows_v##V(const void* tokens, const int32_t* row_id_map, void* out,        \
                                int64_t n, int32_t k, int64_t units, int32_t lanes) {            \
    permute_rows<V, UNROLL>(tokens, row_id_map, out, n, k, units, lanes);                        \
  }
#define MOEPREP_ZERO(V)                                                                          \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_zero_padding_rows_v##V(const long long* src_token, void* out, int64_t num_out,     \
                                     int64_t units, int32_t lanes) {                             \
    zero_padding_rows<V>(src_token, out, num_out, units, lanes);                                 \
  }
MOEPREP_PERMUTE(16, 8)
MOEPREP_PERMUTE(8, 4)
MOEPREP_PERMUTE(4, 4)
MOEPREP_PERMUTE(2, 4)
MOEPREP_PERMUTE(1, 4)
MOEPREP_ZERO(16)
MOEPREP_ZERO(8)
MOEPREP_ZERO(4)
MOEPREP_ZERO(2)
MOEPREP_ZERO(1)
