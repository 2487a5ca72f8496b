// Unpermute (combine): out[t] = round_D(sum over k of p(t,k) * float(expertOut[rowId(t,k)])),
// accumulated in float32 in slot order from +0.0f, each step acc = fl(acc + fl(p * x)) with no
// fused multiply-add, then rounded with the integer algorithms of contract/Numerics.java.
#include "common.cuh"

namespace moeprep {

// Thread mapping: one warp per token, grid-stride over tokens (64-bit). Lane j reads slot j's row
// id and prob (32 slots at a time; K > 32 takes several rounds), and the warp's ballot names the
// slots that have a row (-1 slots are skipped). Each lane owns units lane, lane + 32, ... of the
// token's row, kU at a time, in steps that the whole warp takes together; for each step it walks the kept slots in slot order, issuing the
// loads of kSlots slots together (memory-level parallelism), then accumulating them in slot order,
// and stores the rounded sums. A token without a kept slot stores zeros (+0.0 encodes as 0 bits
// in every dtype), at store bandwidth.
// Shapes: expert_out [numOut][units] units of V bytes = V / sizeof(D::storage) elements;
// row_id_map int32 [n][k] (-1: skipped); probs float32 [n][k] or null (p = 1); out [n][units].
template <typename D, int V, int kU, int kSlots>
__device__ void unpermute_warp(const void* __restrict__ expert_out,
                               const int32_t* __restrict__ row_id_map,
                               const float* __restrict__ probs, void* __restrict__ out, int64_t n,
                               int32_t k, int64_t units) {
  using U = typename Unit<V>::type;
  using S = typename D::storage;
  constexpr int kElems = V / static_cast<int>(sizeof(S));
  static_assert(kElems >= 1, "a unit holds at least one element");
  static_assert(kSlots == 1 || kSlots == 2, "one or two slots in flight");
  union Packed {
    U unit;
    S elems[kElems];
  };
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const U* src = static_cast<const U*>(expert_out);
  for (int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; t < n;
       t += warps) {
    const int32_t* rows = row_id_map + t * k;
    // the first 32 slots stay in registers for the whole row; later ones are read per step
    const int32_t r0 = lane < k ? rows[lane] : -1;
    const float p0 = r0 >= 0 && probs != nullptr ? probs[t * k + lane] : 1.0f;
    const unsigned kept0 = __ballot_sync(kAll, r0 >= 0);
    U* dst = static_cast<U*>(out) + t * units;
    // warp-uniform steps (every lane takes part in the shuffles and ballots below); lanes past
    // the row's end load and store nothing
    for (int64_t base = 0; base < units; base += 32 * kU) {
      const int64_t u0 = base + lane;
      float acc[kU][kElems];
#pragma unroll
      for (int j = 0; j < kU; j++) {
#pragma unroll
        for (int i = 0; i < kElems; i++) {
          acc[j][i] = 0.0f;
        }
      }
      for (int32_t s0 = 0; s0 < k; s0 += 32) {
        int32_t r = r0;
        float p = p0;
        unsigned kept = kept0;
        if (s0 > 0) {
          r = s0 + lane < k ? rows[s0 + lane] : -1;
          p = r >= 0 && probs != nullptr ? probs[t * k + s0 + lane] : 1.0f;
          kept = __ballot_sync(kAll, r >= 0);
        }
        while (kept != 0) {
          int32_t row[kSlots];
          float w[kSlots];
#pragma unroll
          for (int b = 0; b < kSlots; b++) {
            const int s = kept != 0 ? __ffs(kept) - 1 : -1;  // warp-uniform
            kept = kept != 0 ? kept & (kept - 1) : 0;
            row[b] = __shfl_sync(kAll, r, s < 0 ? 0 : s);
            w[b] = __shfl_sync(kAll, p, s < 0 ? 0 : s);
            if (s < 0) {
              row[b] = -1;
            }
          }
          Packed x[kSlots][kU];
#pragma unroll
          for (int b = 0; b < kSlots; b++) {
#pragma unroll
            for (int j = 0; j < kU; j++) {
              const int64_t u = u0 + 32 * j;
              if (row[b] >= 0 && u < units) {
                x[b][j].unit = src[static_cast<int64_t>(row[b]) * units + u];
              }
            }
          }
#pragma unroll
          for (int b = 0; b < kSlots; b++) {
            if (row[b] < 0) {
              continue;
            }
#pragma unroll
            for (int j = 0; j < kU; j++) {
#pragma unroll
              for (int i = 0; i < kElems; i++) {
                acc[j][i] = __fadd_rn(acc[j][i], __fmul_rn(w[b], D::decode(x[b][j].elems[i])));
              }
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kU; j++) {
        const int64_t u = u0 + 32 * j;
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

// Instantiations: kU = 4 units per lane in flight per slot; the _pairs kernels load two slots at
// once, for tokens with several kept slots (the host picks them when numOut >= 2 n).
#define MOEPREP_UNPERMUTE(DT, NAME, V, SLOTS, SUFFIX)                                            \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_unpermute_##NAME##_v##V##SUFFIX(const void* expert_out, const int32_t* row_id_map, \
                                              const float* probs, void* out, int64_t n,          \
                                              int32_t k, int64_t units) {                        \
    unpermute_warp<DT, V, 4, SLOTS>(expert_out, row_id_map, probs, out, n, k, units);            \
  }
#define MOEPREP_UNPERMUTE_DTYPE(DT, NAME)      \
  MOEPREP_UNPERMUTE(DT, NAME, 16, 1, )         \
  MOEPREP_UNPERMUTE(DT, NAME, 16, 2, _pairs)   \
  MOEPREP_UNPERMUTE(DT, NAME, 8, 1, )          \
  MOEPREP_UNPERMUTE(DT, NAME, 8, 2, _pairs)    \
  MOEPREP_UNPERMUTE(DT, NAME, 4, 1, )          \
  MOEPREP_UNPERMUTE(DT, NAME, 4, 2, _pairs)
MOEPREP_UNPERMUTE_DTYPE(F32, f32)
MOEPREP_UNPERMUTE_DTYPE(BF16, bf16)
MOEPREP_UNPERMUTE_DTYPE(F16, f16)
MOEPREP_UNPERMUTE(BF16, bf16, 2, 1, )
MOEPREP_UNPERMUTE(BF16, bf16, 2, 2, _pairs)
MOEPREP_UNPERMUTE(F16, f16, 2, 1, )
MOEPREP_UNPERMUTE(F16, f16, 2, 2, _pairs)
