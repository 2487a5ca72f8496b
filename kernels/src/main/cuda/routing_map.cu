// Row-map construction on the device: a stable counting sort of the flattened (token, slot)
// entries by expert, without any 32-bit sort trick. Three kernels, the CPU backend's 2-pass scheme:
//   1. count_experts: per chunk of slots, the valid local slots of each expert;
//   2. scan_chunks:   per expert, the exclusive prefix over chunks (rank of a chunk's first slot)
//                     and the expert's total; the totals go to the host, where SegmentLayout
//                     (capacity, alignment: the contract's one source of truth) makes the layout;
//   3. scatter_rows:  per chunk, in (token, slot) order, each valid slot's rank within its expert;
//                     slots ranked past the expert's kept count are dropped. -1 slots, slots of
//                     experts this rank does not own and dropped slots form the last bucket: they
//                     get row -1 and no output row.
// Nothing depends on the order of atomics: counts are order-free, ranks come from the scan and a
// sequential walk of each chunk. Slot indices are 64-bit, so N*K >= 2^31 slots works.
#include "common.cuh"

namespace moeprep {

constexpr int kScatterWarps = 4;

// Thread mapping: one block of kBlockThreads threads per chunk c (grid-stride over chunks); the
// block walks slots [c*chunk_slots, min(slots, (c+1)*chunk_slots)) in tiles of blockDim.x.
// Shapes: ids int32 [slots]; local uint8 [E]; table uint64 [E][chunks] (expert-major; zeroed by
// the host when kSharedHist is false). Writes table[e][c] = valid local slots of e in chunk c.
template <bool kSharedHist>
__device__ void count_experts(const int32_t* __restrict__ ids, const uint8_t* __restrict__ local,
                              int64_t slots, int64_t chunk_slots, int64_t chunks,
                              int32_t num_experts, unsigned long long* __restrict__ table) {
  extern __shared__ unsigned int hist[];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    if (kSharedHist) {
      for (int32_t e = threadIdx.x; e < num_experts; e += blockDim.x) {
        hist[e] = 0;
      }
      __syncthreads();
    }
    const int64_t start = c * chunk_slots;
    const int64_t end = min(slots, start + chunk_slots);
    // uniform trip count over the block, so that every lane of a warp takes part in the match
    for (int64_t base = start; base < end; base += blockDim.x) {
      const int64_t s = base + threadIdx.x;
      int32_t key = -1;
      if (s < end) {
        const int32_t e = ids[s];
        if (e >= 0 && local[e]) {
          key = e;
        }
      }
      // one atomic per distinct expert in the warp
      const unsigned peers = __match_any_sync(0xFFFFFFFFu, key);
      const int32_t leader = 31 - __clz(peers);
      if (key >= 0 && static_cast<int32_t>(threadIdx.x & 31) == leader) {
        if (kSharedHist) {
          atomicAdd(&hist[key], static_cast<unsigned>(__popc(peers)));
        } else {
          atomicAdd(&table[static_cast<int64_t>(key) * chunks + c],
                    static_cast<unsigned long long>(__popc(peers)));
        }
      }
    }
    if (kSharedHist) {
      __syncthreads();
      for (int32_t e = threadIdx.x; e < num_experts; e += blockDim.x) {
        table[static_cast<int64_t>(e) * chunks + c] = hist[e];
      }
      __syncthreads();
    }
  }
}

// Inclusive sum over the block of one value per thread; blockDim.x is kBlockThreads.
__device__ unsigned long long block_inclusive_sum(unsigned long long v, unsigned long long* warp_sums,
                                                  unsigned long long* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int d = 1; d < 32; d <<= 1) {
    const unsigned long long o = __shfl_up_sync(0xFFFFFFFFu, v, d);
    if (lane >= d) {
      v += o;
    }
  }
  if (lane == 31) {
    warp_sums[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    unsigned long long w = lane < warps ? warp_sums[lane] : 0ull;
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned long long o = __shfl_up_sync(0xFFFFFFFFu, w, d);
      if (lane >= d) {
        w += o;
      }
    }
    if (lane < warps) {
      warp_sums[lane] = w;
    }
    if (lane == warps - 1) {
      *total = w;
    }
  }
  __syncthreads();
  const unsigned long long before = warp == 0 ? 0ull : warp_sums[warp - 1];
  const unsigned long long result = v + before;
  __syncthreads();  // warp_sums is reused by the next call
  return result;
}

// Thread mapping: one block of kBlockThreads threads per expert e (grid-stride over experts); the
// block scans row e of table [E][chunks] in tiles of 4*kBlockThreads entries, 4 per thread.
// In place: table[e][c] becomes the exclusive prefix over chunks; valid[e] = the row's total.
__device__ void scan_chunks(unsigned long long* __restrict__ table, int64_t chunks,
                            int32_t num_experts, long long* __restrict__ valid) {
  __shared__ unsigned long long warp_sums[32];
  __shared__ unsigned long long tile_total;
  constexpr int kItems = 4;
  for (int64_t e = blockIdx.x; e < num_experts; e += gridDim.x) {
    unsigned long long* row = table + e * chunks;
    unsigned long long carry = 0;
    for (int64_t base = 0; base < chunks; base += static_cast<int64_t>(blockDim.x) * kItems) {
      const int64_t first = base + static_cast<int64_t>(threadIdx.x) * kItems;
      unsigned long long v[kItems];
      unsigned long long sum = 0;
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        v[j] = first + j < chunks ? row[first + j] : 0ull;
        sum += v[j];
      }
      const unsigned long long inclusive = block_inclusive_sum(sum, warp_sums, &tile_total);
      unsigned long long running = carry + inclusive - sum;
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        if (first + j < chunks) {
          row[first + j] = running;
        }
        running += v[j];
      }
      carry += tile_total;
      __syncthreads();  // tile_total is rewritten by the next tile
    }
    if (threadIdx.x == 0) {
      valid[e] = static_cast<long long>(carry);
    }
  }
}

// Thread mapping: blocks of kScatterWarps warps; warp w of block b owns chunk b*kScatterWarps + w
// (grid-stride) and walks its slots in order, 32 at a time. Lanes of one tile with the same
// expert are ranked by lane (__match_any_sync), so ranks follow (token, slot) order.
// Shapes: ids int32 [slots], slots = n*k; local uint8 [E]; table uint64 [E][chunks] (exclusive
// ranks from scan_chunks; advanced in place when kSharedRanks is false); kept int64 [E];
// offsets int64 [E+1]; row_id_map int32 [slots]; src_token, src_slot int64 [num_out]; probs float
// [slots] or null; permuted_probs float [num_out] or null. Writes every row_id_map entry and the
// source of every kept row; then warp w of the grid fills the padding rows of experts w, w + warps,
// ... ([offset(e) + kept(e), offset(e+1)), and [offset(E), num_out) for e = E) with source -1 and
// prob 0. Kept and padding rows are disjoint, so no row is written twice.
template <bool kSharedRanks>
__device__ void scatter_rows(const int32_t* __restrict__ ids, const uint8_t* __restrict__ local,
                             int64_t slots, int32_t k, int64_t chunk_slots, int64_t chunks,
                             int32_t num_experts, unsigned long long* __restrict__ table,
                             const long long* __restrict__ kept,
                             const long long* __restrict__ offsets,
                             int32_t* __restrict__ row_id_map, long long* __restrict__ src_token,
                             long long* __restrict__ src_slot, const float* __restrict__ probs,
                             float* __restrict__ permuted_probs, int64_t num_out) {
  // shared (kSharedRanks): per-warp ranks [kScatterWarps][E], then kept [E], offsets [E+1] and
  // the local mask [E] of the block
  extern __shared__ unsigned long long shared_ranks[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  const long long* kept_at = kept;
  const long long* offsets_at = offsets;
  const uint8_t* local_at = local;
  if (kSharedRanks) {
    long long* kept_s =
        reinterpret_cast<long long*>(shared_ranks + static_cast<int64_t>(kScatterWarps) * num_experts);
    long long* offsets_s = kept_s + num_experts;
    uint8_t* local_s = reinterpret_cast<uint8_t*>(offsets_s + num_experts + 1);
    for (int32_t e = threadIdx.x; e <= num_experts; e += blockDim.x) {
      offsets_s[e] = offsets[e];
      if (e < num_experts) {
        kept_s[e] = kept[e];
        local_s[e] = local[e];
      }
    }
    __syncthreads();
    kept_at = kept_s;
    offsets_at = offsets_s;
    local_at = local_s;
  }
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kScatterWarps + warp; c < chunks;
       c += static_cast<int64_t>(gridDim.x) * kScatterWarps) {
    unsigned long long* rank = nullptr;
    int64_t rank_stride = 1;
    if (kSharedRanks) {
      rank = shared_ranks + static_cast<int64_t>(warp) * num_experts;
      for (int32_t e = lane; e < num_experts; e += 32) {
        rank[e] = table[static_cast<int64_t>(e) * chunks + c];
      }
      __syncwarp();
    } else {
      rank = table + c;
      rank_stride = chunks;
    }
    const int64_t start = c * chunk_slots;
    const int64_t end = min(slots, start + chunk_slots);
    // kTiles tiles of 32 slots per step, their ids and probs loaded together (one memory latency
    // per step)
    constexpr int kTiles = 8;
    for (int64_t step = start; step < end; step += 32 * kTiles) {
      int32_t id[kTiles];
      float prob[kTiles];
#pragma unroll
      for (int j = 0; j < kTiles; j++) {
        const int64_t s = step + j * 32 + lane;
        id[j] = s < end ? ids[s] : -1;
        prob[j] = s < end && probs != nullptr ? probs[s] : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < kTiles; j++) {
        const int64_t s = step + j * 32 + lane;
        const bool in = s < end;
        const int32_t key = id[j] >= 0 && local_at[id[j]] ? id[j] : -1;
        const unsigned peers = __match_any_sync(0xFFFFFFFFu, key);
        unsigned long long r = 0;
        if (key >= 0) {
          r = rank[key * rank_stride] + __popc(peers & lanes_below);
        }
        __syncwarp();
        if (key >= 0 && lane == 31 - __clz(peers)) {
          rank[key * rank_stride] += __popc(peers);
        }
        __syncwarp();
        int32_t row = -1;
        if (key >= 0 && r < static_cast<unsigned long long>(kept_at[key])) {
          const int64_t out = offsets_at[key] + static_cast<int64_t>(r);
          row = static_cast<int32_t>(out);
          const int64_t t = s / k;
          src_token[out] = t;
          src_slot[out] = s - t * k;
          if (probs != nullptr) {
            permuted_probs[out] = prob[j];
          }
        }
        if (in) {
          row_id_map[s] = row;
        }
      }
    }
    __syncwarp();
  }
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kScatterWarps;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kScatterWarps + warp; e <= num_experts;
       e += warps) {
    const int64_t from =
        e < num_experts ? offsets_at[e] + kept_at[e] : offsets_at[num_experts];
    const int64_t to = e < num_experts ? offsets_at[e + 1] : num_out;
    for (int64_t i = from + lane; i < to; i += 32) {
      src_token[i] = -1;
      src_slot[i] = -1;
      if (permuted_probs != nullptr) {
        permuted_probs[i] = 0.0f;
      }
    }
  }
}

}  // namespace moeprep

using namespace moeprep;

#define MOEPREP_COUNT(NAME, SHARED)                                                              \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      NAME(const int32_t* ids, const uint8_t* local, int64_t slots, int64_t chunk_slots,         \
           int64_t chunks, int32_t num_experts, unsigned long long* table) {                     \
    count_experts<SHARED>(ids, local, slots, chunk_slots, chunks, num_experts, table);           \
  }
MOEPREP_COUNT(moeprep_count_experts_shared, true)
MOEPREP_COUNT(moeprep_count_experts_global, false)

extern "C" __global__ void __launch_bounds__(kBlockThreads)
    moeprep_scan_chunks(unsigned long long* table, int64_t chunks, int32_t num_experts,
                        long long* valid) {
  scan_chunks(table, chunks, num_experts, valid);
}

#define MOEPREP_SCATTER(NAME, SHARED)                                                            \
  extern "C" __global__ void __launch_bounds__(kScatterWarps * 32)                               \
      NAME(const int32_t* ids, const uint8_t* local, int64_t slots, int32_t k,                   \
           int64_t chunk_slots, int64_t chunks, int32_t num_experts, unsigned long long* table,  \
           const long long* kept, const long long* offsets, int32_t* row_id_map,                 \
           long long* src_token, long long* src_slot, const float* probs, float* permuted_probs,  \
           int64_t num_out) {                                                                    \
    scatter_rows<SHARED>(ids, local, slots, k, chunk_slots, chunks, num_experts, table, kept,    \
                         offsets, row_id_map, src_token, src_slot, probs, permuted_probs,        \
                         num_out);                                                               \
  }
MOEPREP_SCATTER(moeprep_scatter_rows_shared, true)
MOEPREP_SCATTER(moeprep_scatter_rows_global, false)
