// Unpermute (combine): out[t] = round_D(sum over k of p(t,k) * float(expertOut[rowId(t,k)])),
// accumulated in float32 in slot order from +0.0f, each step acc = fl(acc + fl(p * x)) with no
// fused multiply-add, then rounded with the integer algorithms of contract/Numerics.java.
#include "common.cuh"

namespace moeprep {

// The kept slots of one warp's tokens (t, t + warps, ...) in the order unpermute_staged consumes
// them: for each token, for each step of the row, the kept slots in slot order. Warp-uniform.
// Tokens without a kept slot are skipped (when k <= 32, their ids fit one round).
struct SlotFeed {
  int64_t t;
  int64_t step;
  int32_t s0;       // the first slot of the current round of 32
  int32_t r0;       // this lane's slot id in round 0 of token t
  unsigned kept0;   // round 0's kept slots
  int32_t r;        // this lane's slot id in the current round
  unsigned kept;    // the current round's kept slots not yet fed

  // moves to the first token at or after t with a kept slot (k <= 32), or to t (k > 32)
  __device__ void seek(const int32_t* __restrict__ row_id_map, const float* __restrict__ probs,
                       int64_t n, int32_t k, int64_t warps, int lane) {
    r0 = -1;
    kept0 = 0;
    for (; t < n; t += warps) {
      r0 = lane < k ? row_id_map[t * k + lane] : -1;
      kept0 = __ballot_sync(0xffffffffu, r0 >= 0);
      if (kept0 != 0 || k > 32) {
        if (probs != nullptr && r0 >= 0) {
          prefetch_l1(probs + t * k + lane);  // the consumer's weights
        }
        break;
      }
    }
    step = 0;
    s0 = 0;
    r = r0;
    kept = kept0;
  }

  // the row of the next kept slot (warp-uniform; `step` is its step), or -1 when no slot is left
  __device__ int32_t next(const int32_t* __restrict__ row_id_map, const float* __restrict__ probs,
                          int64_t n, int32_t k, int64_t warps, int64_t steps, int lane) {
    while (t < n) {
      if (kept != 0) {
        const int s = __ffs(kept) - 1;
        kept &= kept - 1;
        return __shfl_sync(0xffffffffu, r, s);
      }
      s0 += 32;
      if (s0 < k) {
        r = s0 + lane < k ? row_id_map[t * k + s0 + lane] : -1;
        kept = __ballot_sync(0xffffffffu, r >= 0);
        continue;
      }
      s0 = 0;
      r = r0;
      kept = kept0;
      if (++step == steps) {
        t += warps;
        seek(row_id_map, probs, n, k, warps, lane);
      }
    }
    return -1;
  }
};

// Thread mapping: one warp per token, grid-stride over tokens (64-bit); each lane owns units
// lane, lane + 32, ... of a row, kU at a time (a step). The rows to combine stream through a ring
// of kStages chunks (one kept slot's kU units per lane) in the warp's share of shared memory,
// copied asynchronously (no register holds a chunk in flight): kStages - 1 chunks are in flight
// while the warp accumulates the oldest, across slots, steps and tokens, in slot order per step,
// acc = fl(acc + fl(p * x)). A token without a kept slot stores zeros (+0.0 encodes as 0 bits in
// every dtype). Lane j reads slot j's row id and prob (32 slots a round; K > 32 takes several).
// Shapes: expert_out [numOut][units] units of V bytes = V / sizeof(D::storage) elements;
// row_id_map int32 [n][k] (-1: skipped); probs float32 [n][k] or null (p = 1); out [n][units].
template <typename D, int V, int kU, int kStages>
__device__ void unpermute_staged(const void* __restrict__ expert_out,
                                 const int32_t* __restrict__ row_id_map,
                                 const float* __restrict__ probs, void* __restrict__ out,
                                 int64_t n, int32_t k, int64_t units) {
  using U = typename Unit<V>::type;
  using S = typename D::storage;
  constexpr int kElems = V / static_cast<int>(sizeof(S));
  static_assert(kStages >= 2, "at least one chunk in flight");
  union Packed {
    U unit;
    S elems[kElems];
  };
  constexpr unsigned kAll = 0xffffffffu;
  __shared__ U ring_all[kBlockThreads / 32][kStages][kU][32];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  U(*ring)[kU][32] = ring_all[threadIdx.x >> 5];
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t steps = (units + 32 * kU - 1) / (32 * kU);
  const U* src = static_cast<const U*>(expert_out);

  SlotFeed feed;
  feed.t = first;
  feed.seek(row_id_map, probs, n, k, warps, lane);
  // loads the feed's next chunk into ring[stage] (nothing once the feed is done), as one group
  auto load = [&](int stage) {
    const int32_t row = feed.next(row_id_map, probs, n, k, warps, steps, lane);
    if (row >= 0) {
      const U* from = src + static_cast<int64_t>(row) * units + feed.step * 32 * kU + lane;
#pragma unroll
      for (int j = 0; j < kU; j++) {
        if (feed.step * 32 * kU + lane + 32 * j < units) {
          copy_to_shared<V>(&ring[stage][j][lane], from + 32 * j);
        }
      }
    }
    copy_commit();
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; i++) {
    load(i);
  }
  int head = 0;  // the stage of the next chunk to accumulate; the next load goes to the one before
  for (int64_t t = first; t < n; t += warps) {
    const int32_t r0 = lane < k ? row_id_map[t * k + lane] : -1;
    const float p0 = r0 >= 0 && probs != nullptr ? probs[t * k + lane] : 1.0f;
    const unsigned kept0 = __ballot_sync(kAll, r0 >= 0);
    U* dst = static_cast<U*>(out) + t * units;
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
          r = s0 + lane < k ? row_id_map[t * k + s0 + lane] : -1;
          p = r >= 0 && probs != nullptr ? probs[t * k + s0 + lane] : 1.0f;
          kept = __ballot_sync(kAll, r >= 0);
        }
        while (kept != 0) {
          const int s = __ffs(kept) - 1;
          kept &= kept - 1;
          const float w = __shfl_sync(kAll, p, s);
          copy_wait<kStages - 2>();  // this chunk's group has landed
          Packed x[kU];
#pragma unroll
          for (int j = 0; j < kU; j++) {
            if (u0 + 32 * j < units) {
              x[j].unit = ring[head][j][lane];
            }
          }
          // the stage accumulated last time is free: the next chunk goes there
          load(head == 0 ? kStages - 1 : head - 1);
          head = head == kStages - 1 ? 0 : head + 1;
#pragma unroll
          for (int j = 0; j < kU; j++) {
            if (u0 + 32 * j < units) {
#pragma unroll
              for (int i = 0; i < kElems; i++) {
                acc[j][i] = __fadd_rn(acc[j][i], __fmul_rn(w, D::decode(x[j].elems[i])));
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
  copy_wait<0>();
}

}  // namespace moeprep

using namespace moeprep;

// Instantiations: 4 units per lane per chunk, 3 chunks in the ring (2 in flight): 48 KB of shared
// memory per block of 16-byte units. Measured against 1, 2 and 4 units with 2 to 12 chunks, and
// with more blocks per multiprocessor (kernels/src/bench/cuda/sweep.cu, README.md).
#define MOEPREP_UNPERMUTE(DT, NAME, V)                                                           \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_unpermute_##NAME##_v##V(const void* expert_out, const int32_t* row_id_map,         \
                                      const float* probs, void* out, int64_t n, int32_t k,       \
                                      int64_t units) {                                           \
    unpermute_staged<DT, V, 4, 3>(expert_out, row_id_map, probs, out, n, k, units);              \
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
