// Unpermute (combine): out[t] = round_D(sum over k of p(t,k) * float(expertOut[rowId(t,k)])),
// accumulated in float32 in slot order from +0.0f, each step acc = fl(acc + fl(p * x)) with no
// fused multiply-add, then rounded with the integer algorithms of contract/Numerics.java.
#include "common.cuh"

namespace moeprep {

// Thread mapping: `lanes` threads per token (RowTile), contiguous tokens per block; each thread
// owns up to kUnroll units (units lane, lane + lanes, ...) of V bytes = V / sizeof(D::storage)
// elements each. It walks the token's K slots in order, gathering the next kBatch slots that have
// a row (-1 slots are skipped), loads those rows' units first (memory-level parallelism), then
// accumulates them in slot order, and finally stores the rounded sums.
// Shapes: expert_out [numOut][units]; row_id_map int32 [n][k] (-1: skipped); probs float32 [n][k]
// or null (p = 1); out [n][units]. 64-bit row and unit indices.
template <typename D, int V, int kBatch, int kUnroll>
__device__ void unpermute_rows(const void* __restrict__ expert_out,
                               const int32_t* __restrict__ row_id_map,
                               const float* __restrict__ probs, void* __restrict__ out, int64_t n,
                               int32_t k, int64_t units, int32_t lanes) {
  using U = typename Unit<V>::type;
  using S = typename D::storage;
  constexpr int kElems = V / static_cast<int>(sizeof(S));
  static_assert(kElems >= 1, "a unit holds at least one element");
  union Packed {
    U unit;
    S elems[kElems];
  };
  const RowTile tile(lanes, n);
  const U* src_base = static_cast<const U*>(expert_out);
  U* dst_base = static_cast<U*>(out);
  for (int64_t g = tile.group_begin; g < tile.group_end; g++) {
    const int64_t t = tile.row(g);
    if (t >= n) {
      break;
    }
    const int32_t* rows = row_id_map + t * k;
    if (g + 1 < tile.group_end && tile.lane == 0) {
      prefetch_l1(row_id_map + tile.row(g + 1) * k);
    }
    for (int64_t u0 = tile.lane; u0 < units; u0 += static_cast<int64_t>(lanes) * kUnroll) {
      float acc[kUnroll][kElems];
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
#pragma unroll
        for (int i = 0; i < kElems; i++) {
          acc[j][i] = 0.0f;
        }
      }
      int32_t s = 0;
      while (s < k) {
        // the next kBatch slots with a row, in slot order
        int32_t row[kBatch];
        int32_t slot[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; b++) {
          row[b] = -1;
          slot[b] = 0;
        }
        int cnt = 0;
        for (; s < k && cnt < kBatch; s++) {
          const int32_t r = rows[s];
          if (r >= 0) {
#pragma unroll
            for (int b = 0; b < kBatch; b++) {
              if (b == cnt) {
                row[b] = r;
                slot[b] = s;
              }
            }
            cnt++;
          }
        }
        Packed x[kBatch][kUnroll];
#pragma unroll
        for (int b = 0; b < kBatch; b++) {
#pragma unroll
          for (int j = 0; j < kUnroll; j++) {
            const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
            if (row[b] >= 0 && u < units) {
              x[b][j].unit = src_base[static_cast<int64_t>(row[b]) * units + u];
            }
          }
        }
        float p[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; b++) {
          p[b] = row[b] >= 0 && probs != nullptr ? probs[t * k + slot[b]] : 1.0f;
        }
#pragma unroll
        for (int b = 0; b < kBatch; b++) {
          if (row[b] < 0) {
            continue;
          }
#pragma unroll
          for (int j = 0; j < kUnroll; j++) {
            const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
            if (u < units) {
#pragma unroll
              for (int i = 0; i < kElems; i++) {
                acc[j][i] = __fadd_rn(acc[j][i], __fmul_rn(p[b], D::decode(x[b][j].elems[i])));
              }
            }
          }
        }
      }
      U* dst = dst_base + t * units;
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
        if (u < units) {
          Packed y;
#pragma unroll
          for (int i = 0; i < kElems; i++) {
            y.elems[i] = static_cast<S>(D::encode(acc[j][i]));
          }
          dst[u] = y.unit;
        }
      }
    }
  }
}

}  // namespace moeprep

using namespace moeprep;

// Instantiations: one per dtype and unit size V; kBatch = 2 rows of kUnroll = 4 units in flight.
#define MOEPREP_UNPERMUTE(DT, NAME, V)                                                           \
  extern "C" __global__ void __launch_bounds__(kBlockThreads, 1)                                 \
      moeprep_unpermute_##NAME##_v##V(const void* expert_out, const int32_t* row_id_map,         \
                                      const float* probs, void* out, int64_t n, int32_t k,       \
                                      int64_t units, int32_t lanes) {                            \
    unpermute_rows<DT, V, 2, 4>(expert_out, row_id_map, probs, out, n, k, units, lanes);         \
  }
#define MOEPREP_UNPERMUTE_DTYPE(DT, NAME) \
  MOEPREP_UNPERMUTE(DT, NAME, 16)         \
  MOEPREP_UNPERMUTE(DT, NAME, 8)          \
  MOEPREP_UNPERMUTE(DT, NAME, 4)
MOEPREP_UNPERMUTE_DTYPE(F32, f32)
MOEPREP_UNPERMUTE_DTYPE(BF16, bf16)
MOEPREP_UNPERMUTE_DTYPE(F16, f16)
MOEPREP_UNPERMUTE(BF16, bf16, 2)
MOEPREP_UNPERMUTE(F16, f16, 2)
