// Unpermute (combine): out[t] = round_D(sum over k of p(t,k) * float(expertOut[rowId(t,k)])),
// accumulated in float32 in slot order from +0.0f, each step acc = fl(acc + fl(p * x)) with no
// fused multiply-add, then rounded with the integer algorithms of contract/Numerics.java.
#include "common.cuh"

namespace moeprep {

constexpr int kUnpermuteUnroll = 2;

// Thread mapping: `lanes` threads per token (RowTile), grid-stride over tokens; each thread owns
// up to kUnpermuteUnroll units (units lane, lane + lanes) of V bytes = V / sizeof(D::storage)
// elements each, accumulates them over the token's K slots in order and stores the rounded sums.
// Shapes: expert_out [numOut][units]; row_id_map int32 [n][k] (-1: skipped); probs float32 [n][k]
// or null (p = 1); out [n][units].
template <typename D, int V>
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
  const RowTile tile(lanes);
  const U* src_base = static_cast<const U*>(expert_out);
  U* dst_base = static_cast<U*>(out);
  for (int64_t t = tile.first_row(); t < n; t += tile.row_stride()) {
    const int32_t* rows = row_id_map + t * k;
    for (int64_t u0 = tile.lane; u0 < units;
         u0 += static_cast<int64_t>(lanes) * kUnpermuteUnroll) {
      float acc[kUnpermuteUnroll][kElems];
#pragma unroll
      for (int j = 0; j < kUnpermuteUnroll; j++) {
#pragma unroll
        for (int i = 0; i < kElems; i++) {
          acc[j][i] = 0.0f;
        }
      }
      for (int32_t s = 0; s < k; s++) {
        const int32_t row = rows[s];
        if (row < 0) {
          continue;
        }
        const float p = probs != nullptr ? probs[t * k + s] : 1.0f;
        const U* src = src_base + static_cast<int64_t>(row) * units;
#pragma unroll
        for (int j = 0; j < kUnpermuteUnroll; j++) {
          const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
          if (u < units) {
            Packed x;
            x.unit = src[u];
#pragma unroll
            for (int i = 0; i < kElems; i++) {
              acc[j][i] = __fadd_rn(acc[j][i], __fmul_rn(p, D::decode(x.elems[i])));
            }
          }
        }
      }
      U* dst = dst_base + t * units;
#pragma unroll
      for (int j = 0; j < kUnpermuteUnroll; j++) {
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

#define MOEPREP_UNPERMUTE(DT, NAME, V)                                                           \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_unpermute_##NAME##_v##V(const void* expert_out, const int32_t* row_id_map,         \
                                      const float* probs, void* out, int64_t n, int32_t k,       \
                                      int64_t units, int32_t lanes) {                            \
    unpermute_rows<DT, V>(expert_out, row_id_map, probs, out, n, k, units, lanes);               \
  }
MOEPREP_UNPERMUTE(F32, f32, 16)
MOEPREP_UNPERMUTE(F32, f32, 8)
MOEPREP_UNPERMUTE(F32, f32, 4)
MOEPREP_UNPERMUTE(BF16, bf16, 16)
MOEPREP_UNPERMUTE(BF16, bf16, 8)
MOEPREP_UNPERMUTE(BF16, bf16, 4)
MOEPREP_UNPERMUTE(BF16, bf16, 2)
MOEPREP_UNPERMUTE(F16, f16, 16)
MOEPREP_UNPERMUTE(F16, f16, 8)
MOEPREP_UNPERMUTE(F16, f16, 4)
MOEPREP_UNPERMUTE(F16, f16, 2)
