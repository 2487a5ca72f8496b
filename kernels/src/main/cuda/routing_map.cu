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

// One slot of a warp's tile of 32 in (token, slot) order: ranks key among the lanes with the same
// key (by lane), advances the warp's rank of key, and writes the slot's row in the row map and,
// when the slot is kept, its output row's source and prob. key is -1 for a slot without an output
// row; in is false for lanes past the end. Shared by scatter_rows and map_fused.
template <typename Rank>
__device__ __forceinline__ void scatter_slot(int32_t key, int64_t s, bool in, float prob,
                                             Rank* rank, int64_t rank_stride,
                                             const long long* kept, const long long* offsets,
                                             int32_t k, int32_t* __restrict__ row_id_map,
                                             long long* __restrict__ src_token,
                                             long long* __restrict__ src_slot, bool with_probs,
                                             float* __restrict__ permuted_probs) {
  const int lane = threadIdx.x & 31;
  const unsigned peers = __match_any_sync(0xFFFFFFFFu, key);
  unsigned long long r = 0;
  if (key >= 0) {
    r = rank[key * rank_stride] + __popc(peers & ((1u << lane) - 1u));
  }
  __syncwarp();
  if (key >= 0 && lane == 31 - __clz(peers)) {
    rank[key * rank_stride] += __popc(peers);
  }
  __syncwarp();
  int32_t row = -1;
  if (key >= 0 && r < static_cast<unsigned long long>(kept[key])) {
    const int64_t out = offsets[key] + static_cast<int64_t>(r);
    row = static_cast<int32_t>(out);
    // 32-bit division where it fits (every fused batch): the 64-bit one is a long routine
    const int64_t t = s <= 0x7FFFFFFF ? static_cast<int64_t>(static_cast<uint32_t>(s) /
                                                              static_cast<uint32_t>(k))
                                      : s / k;
    src_token[out] = t;
    src_slot[out] = s - t * k;
    if (with_probs) {
      permuted_probs[out] = prob;
    }
  }
  if (in) {
    row_id_map[s] = row;
  }
}

// The padding rows, source -1 and prob 0: [offset(e) + kept(e), offset(e+1)) of each expert e and
// [offset(E), num_out) for e = E; warp w of the grid's `warps` takes e = w, w + warps, ...
__device__ void fill_padding(int64_t first, int64_t warps, int32_t num_experts,
                             const long long* kept, const long long* offsets, int64_t num_out,
                             long long* __restrict__ src_token, long long* __restrict__ src_slot,
                             float* __restrict__ permuted_probs) {
  const int lane = threadIdx.x & 31;
  for (int64_t e = first; e <= num_experts; e += warps) {
    const int64_t from = e < num_experts ? offsets[e] + kept[e] : offsets[num_experts];
    const int64_t to = e < num_experts ? offsets[e + 1] : num_out;
    for (int64_t i = from + lane; i < to; i += 32) {
      src_token[i] = -1;
      src_slot[i] = -1;
      if (permuted_probs != nullptr) {
        permuted_probs[i] = 0.0f;
      }
    }
  }
}

// A warp's step of kN tiles of 32 slots from step, loaded together (one memory latency): the ids
// (-1 past end) and the probs (0 past end or without probs).
template <int kN>
__device__ __forceinline__ void load_step(const int32_t* __restrict__ ids,
                                          const float* __restrict__ probs, int64_t step,
                                          int64_t end, int lane, int32_t (&id)[kN],
                                          float (&prob)[kN]) {
#pragma unroll
  for (int j = 0; j < kN; j++) {
    const int64_t s = step + j * 32 + lane;
    id[j] = s < end ? ids[s] : -1;
    prob[j] = s < end && probs != nullptr ? probs[s] : 0.0f;
  }
}

// In place: the ids of experts this rank does not own become -1 (a slot without an output row).
template <int kN>
__device__ __forceinline__ void mask_keys(const uint8_t* local, int32_t (&key)[kN]) {
#pragma unroll
  for (int j = 0; j < kN; j++) {
    key[j] = key[j] >= 0 && local[key[j]] ? key[j] : -1;
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
    constexpr int kTiles = 8;
    for (int64_t step = start; step < end; step += 32 * kTiles) {
      int32_t key[kTiles];
      float prob[kTiles];
      load_step(ids, probs, step, end, lane, key, prob);
      mask_keys(local_at, key);
#pragma unroll
      for (int j = 0; j < kTiles; j++) {
        const int64_t s = step + j * 32 + lane;
        scatter_slot(key[j], s, s < end, prob[j], rank, rank_stride, kept_at, offsets_at, k,
                     row_id_map, src_token, src_slot, probs != nullptr, permuted_probs);
      }
    }
    __syncwarp();
  }
  fill_padding(static_cast<int64_t>(blockIdx.x) * kScatterWarps + warp,
               static_cast<int64_t>(gridDim.x) * kScatterWarps, num_experts, kept_at, offsets_at,
               num_out, src_token, src_slot, permuted_probs);
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

// ---------------------------------------------------------------------------------------------
// The fused map: the whole row-map construction in one cooperative launch, for batches small
// enough that the three kernels above and the host round trip between them would cost more than
// the work (up to a few million slots, at most kFusedMaxExperts experts).
//   phase 1: block b counts the valid local slots of each expert in its slot range, per warp
//            (warp w of block b owns a contiguous sub-range), and publishes its block totals;
//   phase 2: per expert, the count of the blocks before b (the block's base rank) and the valid
//            count. Small grids (stride > 0: blocks x stride cells of at most some ten thousand)
//            tag their totals with the launch's number, and every block sums the whole table
//            itself, four experts per load, as soon as it is tagged: no barrier; larger grids
//            wait at a barrier, then one warp per expert turns the expert's row into exclusive
//            prefixes, then a second barrier;
//   phase 3: every block computes the layout of SegmentLayout (capacity, padding, alignment)
//            itself, redundantly; the last block, which has no slots, publishes numOut, the valid
//            counts and the offsets to the host, in mapped pinned memory, ending with the launch's sequence number, so that
//            the host can go on before the kernel ends; then each warp walks its sub-range again
//            in (token, slot) order and scatters, exactly as scatter_rows; the padding rows get
//            source -1.
// The host recomputes the layout from the valid counts with SegmentLayout and checks that both
// agree. Outputs are sized by the host from an upper bound of numOut; rows past the real numOut
// are not written.
namespace moeprep {

constexpr int kFusedWarps = kBlockThreads / 32;
constexpr int kFusedMaxBlocks = 512;
constexpr int kFusedTiles = 8;
// the host's limits (RoutingMapLauncher.FUSED_MAX_EXPERTS, FUSED_MAX_BLOCKS; CudaConstantsTest)
constexpr int kFusedMaxExperts = 768;
// the tagged table's row: 4 x a power of two quads of experts, at most one quad per
// thread (RoutingMapLauncher.fusedStride)
constexpr int kFusedMaxStride = 4 * kBlockThreads;
static_assert(kFusedMaxExperts <= kFusedMaxStride, "a table row holds every expert");
// the fused kernel's cap_mode (RoutingMapLauncher.CAP_*, checked by CudaConstantsTest): no
// capacity, a capacity per expert (cap, pad_to_cap), a total of output rows (cap = numOut)
constexpr int kCapNone = 0;
constexpr int kCapPerExpert = 1;
constexpr int kCapNumOut = 2;

// A barrier of the whole grid, which must be co-resident (a cooperative launch): the block's
// writes before it are visible to the whole grid after it. Thread 0 arrives after the block's
// __syncthreads with a release add at GPU scope (cumulative: it orders the writes of the block
// that the __syncthreads made visible to it) and waits with acquire loads; the final __syncthreads
// passes what it acquired on to the block. arrived counts the arrivals of every barrier of every
// launch on this scratch (same grid size each time; zero at first use), so it is a multiple of
// gridDim.x on entry: each block adds one, then waits for the next multiple. One atomic and the
// polls, no reset.
__device__ void grid_barrier(unsigned long long* arrived) {
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long old;
    asm volatile("atom.add.release.gpu.u64 %0, [%1], 1;" : "=l"(old) : "l"(arrived) : "memory");
    const unsigned long long target = (old / gridDim.x + 1) * gridDim.x;
    unsigned long long now;
    while (true) {
      asm volatile("ld.acquire.gpu.u64 %0, [%1];" : "=l"(now) : "l"(arrived) : "memory");
      if (now >= target) {
        break;
      }
      __nanosleep(32);
    }
  }
  __syncthreads();
}

// The tagged table of small grids: each 32-bit cell holds a count (below 2^23: at most 2^22 slots)
// under the low 9 bits of the launch's sequence number, so that a reader knows a cell of this
// launch from one of an earlier launch (every launch rewrites every cell: a cell holds at most the
// previous launch's number, or zero from the allocation, before this launch writes it).
constexpr int kTagShift = 23;
constexpr unsigned int kCountMask = (1u << kTagShift) - 1u;

__device__ __forceinline__ void store_cell(unsigned int* at, unsigned int v) {
  asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(at), "r"(v) : "memory");
}

__device__ __forceinline__ uint4 load_cells(const uint4* at) {
  uint4 v;
  asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(at)
               : "memory");
  return v;
}

// True when the four cells carry tag.
__device__ __forceinline__ bool tagged(const uint4& v, unsigned int tag) {
  return (((v.x ^ tag) | (v.y ^ tag) | (v.z ^ tag) | (v.w ^ tag)) >> kTagShift) == 0u;
}

// In place, over the block: a[i] becomes the sum of a[0..i); returns the sum of all n values.
// Each thread owns a contiguous run of ceil(n / blockDim.x) entries.
__device__ unsigned long long block_exclusive_scan(long long* a, int32_t n,
                                                   unsigned long long* warp_sums,
                                                   unsigned long long* total) {
  const int32_t per = (n + static_cast<int32_t>(blockDim.x) - 1) / static_cast<int32_t>(blockDim.x);
  const int32_t first = static_cast<int32_t>(threadIdx.x) * per;
  unsigned long long sum = 0;
  for (int32_t i = first; i < min(n, first + per); i++) {
    sum += static_cast<unsigned long long>(a[i]);
  }
  const unsigned long long inclusive = block_inclusive_sum(sum, warp_sums, total);
  const unsigned long long all = *total;
  unsigned long long run = inclusive - sum;
  for (int32_t i = first; i < min(n, first + per); i++) {
    const unsigned long long v = static_cast<unsigned long long>(a[i]);
    a[i] = static_cast<long long>(run);
    run += v;
  }
  __syncthreads();
  return all;
}

// Adds each key's count in a warp's kFusedTiles tiles from step to the warp's counts (keys -1:
// none); tiles from end on are skipped (warp-uniform). Counts need no order: with many experts
// (few equal keys in a tile) one shared atomic per lane; with few, one per distinct key.
__device__ __forceinline__ void count_tiles(const int32_t (&key)[kFusedTiles],
                                            unsigned int* ranks, int64_t step, int64_t end,
                                            int lane, bool many_experts) {
#pragma unroll
  for (int j = 0; j < kFusedTiles; j++) {
    if (step + j * 32 >= end) {
      break;
    }
    if (many_experts) {
      if (key[j] >= 0) {
        atomicAdd(ranks + key[j], 1u);
      }
    } else {
      const unsigned peers = __match_any_sync(0xFFFFFFFFu, key[j]);
      if (key[j] >= 0 && lane == 31 - __clz(peers)) {
        ranks[key[j]] += __popc(peers);
      }
      __syncwarp();
    }
  }
}

// Shapes: ids int32 [slots]; local uint8 [E]; probs float [slots] or null; row_id_map int32
// [slots]; src_token, src_slot int64 and permuted_probs float (or null) [upper bound of numOut];
// table uint32: when stride > 0, [(gridDim.x - 1) x stride] tagged cells (16-byte aligned, zero
// at first use, see kTagShift), else [E x gridDim.x]; stride: 0 (two barriers) or 4 x a power
// of two, at least E, at most kFusedMaxStride; valid int64 [E] (device scratch); barrier uint64
// (persistent, zero at first use, see grid_barrier); result int64 [2E + 3] in host memory mapped
// for the device: numOut, valid[E], offsets[E + 1], then seq, written last; seq: this launch's
// number on this scratch, from 1 up. cap_mode: kCapNone, kCapPerExpert (cap,
// pad_to_cap) or kCapNumOut (cap = M). block_slots: slots per block, a multiple of kBlockThreads;
// gridDim.x at most kFusedMaxBlocks. Dynamic shared memory: kept [E], offsets [E + 1] (int64),
// ranks [kFusedWarps][E] (uint32), local [E] (uint8).
__device__ void map_fused(const int32_t* __restrict__ ids, const uint8_t* __restrict__ local,
                          int64_t slots, int32_t k, int32_t num_experts, int32_t cap_mode,
                          int64_t cap, int32_t pad_to_cap, int32_t align, int64_t block_slots,
                          const float* __restrict__ probs, int32_t* __restrict__ row_id_map,
                          long long* __restrict__ src_token, long long* __restrict__ src_slot,
                          float* __restrict__ permuted_probs, unsigned int* table,
                          long long* valid_dev, unsigned long long* barrier, int32_t stride,
                          long long* result, long long seq) {
  extern __shared__ long long fused_shared[];
  __shared__ unsigned long long warp_sums[32];
  __shared__ unsigned long long scan_total;
  const int32_t e_count = num_experts;
  long long* kept_s = fused_shared;
  long long* offsets_s = kept_s + e_count;
  unsigned int* ranks_s = reinterpret_cast<unsigned int*>(offsets_s + e_count + 1);
  uint8_t* local_s = reinterpret_cast<uint8_t*>(ranks_s + kFusedWarps * e_count);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t warp_slots = block_slots / kFusedWarps;
  const int64_t start =
      min(slots, static_cast<int64_t>(blockIdx.x) * block_slots + warp * warp_slots);
  const int64_t end = min(slots, start + warp_slots);
  const int64_t blocks = gridDim.x;
  unsigned int* my_ranks = ranks_s + warp * e_count;

  // the warp's first step of slots: loaded before the mask is in shared memory, and kept in
  // registers for phase 3 (a warp of blocks of up to 2048 slots has no other)
  int32_t key0[kFusedTiles];
  float prob0[kFusedTiles];
  load_step(ids, probs, start, end, lane, key0, prob0);
  for (int32_t i = threadIdx.x; i < kFusedWarps * e_count; i += blockDim.x) {
    ranks_s[i] = 0;
  }
  for (int32_t e = threadIdx.x; e < e_count; e += blockDim.x) {
    local_s[e] = local[e];
  }
  __syncthreads();
  mask_keys(local_s, key0);

  // phase 1: per-warp counts, then the exclusive prefix over the warps of the block; the block
  // totals go to the table
  count_tiles(key0, my_ranks, start, end, lane, e_count > 32);
  for (int64_t step = start + 32 * kFusedTiles; step < end; step += 32 * kFusedTiles) {
    int32_t key[kFusedTiles];
    float unused[kFusedTiles];
    load_step(ids, nullptr, step, end, lane, key, unused);
    mask_keys(local_s, key);
    count_tiles(key, my_ranks, step, end, lane, e_count > 32);
  }
  __syncthreads();
  // block-major ([blocks - 1][stride], tagged, count zero past E; the last block, which has no
  // slots, writes no row) for small grids, whose blocks read it row by row; expert-major
  // ([E][blocks]) for the two-barrier path
  const unsigned int tag = (static_cast<unsigned int>(seq) & (~0u >> kTagShift)) << kTagShift;
  const int32_t row_cells = stride == 0 ? e_count : blockIdx.x + 1 < gridDim.x ? stride : 0;
  for (int32_t e = threadIdx.x; e < row_cells; e += blockDim.x) {
    unsigned int run = 0;
    if (e < e_count) {
      for (int w = 0; w < kFusedWarps; w++) {
        const unsigned int c = ranks_s[w * e_count + e];
        ranks_s[w * e_count + e] = run;
        run += c;
      }
    }
    if (stride > 0) {
      store_cell(table + blockIdx.x * stride + e, tag | run);
    } else {
      table[e * blocks + blockIdx.x] = run;
    }
  }
  if (stride == 0) {
    grid_barrier(barrier);
  }

  if (stride > 0) {
    // phase 2, small grids, no barrier: every block reads the whole table, [blocks - 1][stride]
    // of tagged cells, 4 experts per 16-byte load, and loads again the cells not yet tagged with
    // this launch's number (all blocks are resident: a cooperative launch). Thread t takes quad
    // t % quads of rows g = t / quads, g + groups, ..., all its loads of a batch in flight at
    // once, starting at a row that differs by block (the grid does not read the same rows at the
    // same time). The lanes of a warp with the same quad add theirs by shuffles; one partial per
    // warp (quads < 32) or per group goes to shared memory: the count of the blocks before this
    // one and the valid count
    __shared__ uint4 part_s[2][kBlockThreads];
    const int32_t quads = stride / 4;
    const int32_t groups = kBlockThreads / quads;
    const int32_t q = threadIdx.x & (quads - 1);
    const int32_t g = threadIdx.x / quads;
    const int32_t nb = static_cast<int32_t>(blocks) - 1;  // rows
    const int32_t me = blockIdx.x;
    const int32_t rows = (nb - g + groups - 1) / groups;  // of this thread; none when g >= nb
    const int32_t turn = rows > 0 ? me % rows : 0;
    const uint4* col = reinterpret_cast<const uint4*>(table) + q;
    uint4 tot = make_uint4(0u, 0u, 0u, 0u);
    uint4 bef = make_uint4(0u, 0u, 0u, 0u);
    constexpr int kBatch = 16;
    for (int32_t i0 = 0; i0 < rows; i0 += kBatch) {
      uint4 v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const int32_t i = i0 + j + turn < rows ? i0 + j + turn : i0 + j + turn - rows;
        v[j] = i0 + j < rows ? load_cells(col + static_cast<int64_t>(g + i * groups) * quads)
                             : make_uint4(tag, tag, tag, tag);
      }
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const int32_t i = i0 + j + turn < rows ? i0 + j + turn : i0 + j + turn - rows;
        while (!tagged(v[j], tag)) {
          v[j] = load_cells(col + static_cast<int64_t>(g + i * groups) * quads);
        }
        const unsigned int early = g + i * groups < me ? 1u : 0u;
        const uint4 c = make_uint4(v[j].x & kCountMask, v[j].y & kCountMask, v[j].z & kCountMask,
                                   v[j].w & kCountMask);
        tot.x += c.x;
        tot.y += c.y;
        tot.z += c.z;
        tot.w += c.w;
        bef.x += early * c.x;
        bef.y += early * c.y;
        bef.z += early * c.z;
        bef.w += early * c.w;
      }
    }
    for (int d = quads; d < 32; d <<= 1) {
      tot.x += __shfl_xor_sync(0xFFFFFFFFu, tot.x, d);
      tot.y += __shfl_xor_sync(0xFFFFFFFFu, tot.y, d);
      tot.z += __shfl_xor_sync(0xFFFFFFFFu, tot.z, d);
      tot.w += __shfl_xor_sync(0xFFFFFFFFu, tot.w, d);
      bef.x += __shfl_xor_sync(0xFFFFFFFFu, bef.x, d);
      bef.y += __shfl_xor_sync(0xFFFFFFFFu, bef.y, d);
      bef.z += __shfl_xor_sync(0xFFFFFFFFu, bef.z, d);
      bef.w += __shfl_xor_sync(0xFFFFFFFFu, bef.w, d);
    }
    const int32_t per_part = max(quads, 32);  // threads behind one partial
    if (quads >= 32 || lane < quads) {
      const int32_t at = static_cast<int32_t>(threadIdx.x) / per_part * quads + q;
      part_s[0][at] = tot;
      part_s[1][at] = bef;
    }
    __syncthreads();
    // then each expert's sums over the partials (at most one per warp), added to the warps' ranks
    const unsigned int* tot_s = reinterpret_cast<const unsigned int*>(part_s[0]);
    const unsigned int* bef_s = reinterpret_cast<const unsigned int*>(part_s[1]);
    const int32_t parts = kBlockThreads / per_part;
    for (int32_t e = threadIdx.x; e < e_count; e += blockDim.x) {
      unsigned int valid = 0u;
      unsigned int before = 0u;
#pragma unroll
      for (int r = 0; r < kFusedWarps; r++) {
        if (r < parts) {
          valid += tot_s[r * stride + e];
          before += bef_s[r * stride + e];
        }
      }
      unsigned int rank[kFusedWarps];
#pragma unroll
      for (int w = 0; w < kFusedWarps; w++) {
        rank[w] = ranks_s[w * e_count + e];
      }
#pragma unroll
      for (int w = 0; w < kFusedWarps; w++) {
        ranks_s[w * e_count + e] = rank[w] + before;
      }
      kept_s[e] = valid;
      offsets_s[e] = valid;
    }
  } else {
    // phase 2, larger grids: per expert, exclusive prefix over the blocks (lane l owns a
    // contiguous run of the row) and the valid count
    constexpr int kPer = kFusedMaxBlocks / 32;
    const int per = static_cast<int>((blocks + 31) / 32);
    for (int64_t e = blockIdx.x * kFusedWarps + warp; e < e_count; e += blocks * kFusedWarps) {
      unsigned int* row = table + e * blocks;
      unsigned int v[kPer];
      unsigned int sum = 0;
#pragma unroll
      for (int j = 0; j < kPer; j++) {
        // no branch between the loads: an index past the row reads its last entry, counted 0
        const int64_t b = static_cast<int64_t>(lane) * per + j;
        const unsigned int x = __ldcg(row + min(b, blocks - 1));
        v[j] = j < per && b < blocks ? x : 0u;
        sum += v[j];
      }
      unsigned int inclusive = sum;
      for (int d = 1; d < 32; d <<= 1) {
        const unsigned int o = __shfl_up_sync(0xFFFFFFFFu, inclusive, d);
        if (lane >= d) {
          inclusive += o;
        }
      }
      unsigned int run = inclusive - sum;
#pragma unroll
      for (int j = 0; j < kPer; j++) {
        const int64_t b = static_cast<int64_t>(lane) * per + j;
        if (j < per && b < blocks) {
          row[b] = run;
          run += v[j];
        }
      }
      if (lane == 31) {
        valid_dev[e] = static_cast<long long>(inclusive);
      }
    }
    grid_barrier(barrier);
    for (int32_t e = threadIdx.x; e < e_count; e += blockDim.x) {
      const unsigned int before = __ldcg(table + e * blocks + blockIdx.x);
      const long long valid = __ldcg(valid_dev + e);
      for (int w = 0; w < kFusedWarps; w++) {
        ranks_s[w * e_count + e] += before;
      }
      kept_s[e] = valid;
      offsets_s[e] = valid;
    }
  }
  __syncthreads();
  // phase 3: the layout, then the scatter. Warp 0 of the last block, which has no slots (the
  // host launches one block more than the slots need), publishes the result: its system-wide
  // fences delay no scatter
  const bool publishes = blockIdx.x == gridDim.x - 1 && warp == 0;
  if (publishes) {
    for (int32_t e = lane; e < e_count; e += 32) {
      result[1 + e] = kept_s[e];
    }
  }
  __syncthreads();  // the layout below overwrites kept_s
  if (cap_mode == kCapNumOut) {
    // kept(e) = min(valid(e), max(0, M - valid slots of the experts before e))
    block_exclusive_scan(offsets_s, e_count, warp_sums, &scan_total);
    for (int32_t e = threadIdx.x; e < e_count; e += blockDim.x) {
      kept_s[e] = min(kept_s[e], max(0ll, static_cast<long long>(cap) - offsets_s[e]));
    }
    __syncthreads();
  }
  for (int32_t e = threadIdx.x; e < e_count; e += blockDim.x) {
    long long kept = kept_s[e];
    if (cap_mode == kCapPerExpert) {
      kept = min(kept, static_cast<long long>(cap));
      kept_s[e] = kept;
    }
    long long rows = kept;
    if (local_s[e] && cap_mode == kCapPerExpert && pad_to_cap) {
      rows = cap;
    }
    if (local_s[e] && align > 1) {
      rows = (rows + align - 1) / align * align;
    }
    offsets_s[e] = rows;
  }
  __syncthreads();
  const long long total_rows =
      static_cast<long long>(block_exclusive_scan(offsets_s, e_count, warp_sums, &scan_total));
  if (threadIdx.x == 0) {
    offsets_s[e_count] = total_rows;
  }
  __syncthreads();
  const long long num_out =
      cap_mode == kCapNumOut ? max(static_cast<long long>(cap), total_rows) : total_rows;
  if (publishes) {
    if (lane == 0) {
      result[0] = num_out;
    }
    for (int32_t e = lane; e <= e_count; e += 32) {
      result[1 + e_count + e] = offsets_s[e];
    }
    // the sequence number last, as the host sees them: a release at system scope by lane 0,
    // cumulative over the lanes' values that the warp's named barrier (bar.sync 1, 32: the memory
    // model's synchronising barrier; __syncthreads uses barrier 0) ordered before it
    asm volatile("bar.sync 1, 32;" ::: "memory");
    if (lane == 0) {
      asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(result + 2 * e_count + 2), "l"(seq)
                   : "memory");
    }
  }

  for (int64_t step = start; step < end; step += 32 * kFusedTiles) {
    int32_t key[kFusedTiles];
    float prob[kFusedTiles];
    if (step == start) {
#pragma unroll
      for (int j = 0; j < kFusedTiles; j++) {
        key[j] = key0[j];
        prob[j] = prob0[j];
      }
    } else {
      load_step(ids, probs, step, end, lane, key, prob);
      mask_keys(local_s, key);
    }
#pragma unroll
    for (int j = 0; j < kFusedTiles; j++) {
      if (step + j * 32 >= end) {
        break;  // warp-uniform: the warp's range ends before this tile
      }
      const int64_t s = step + j * 32 + lane;
      scatter_slot(key[j], s, s < end, prob[j], my_ranks, 1, kept_s, offsets_s, k, row_id_map,
                   src_token, src_slot, probs != nullptr, permuted_probs);
    }
  }
  fill_padding(static_cast<int64_t>(blockIdx.x) * kFusedWarps + warp, blocks * kFusedWarps,
               e_count, kept_s, offsets_s, num_out, src_token, src_slot, permuted_probs);
}

}  // namespace moeprep

extern "C" __global__ void __launch_bounds__(kBlockThreads, 2)  // two blocks per multiprocessor
    moeprep_map_fused(const int32_t* ids, const uint8_t* local, int64_t slots, int32_t k,
                      int32_t num_experts, int32_t cap_mode, int64_t cap, int32_t pad_to_cap,
                      int32_t align, int64_t block_slots, const float* probs, int32_t* row_id_map,
                      long long* src_token, long long* src_slot, float* permuted_probs,
                      unsigned int* table, long long* valid, unsigned long long* barrier,
                      int32_t stride, long long* result, long long seq) {
  map_fused(ids, local, slots, k, num_experts, cap_mode, cap, pad_to_cap, align, block_slots,
            probs, row_id_map, src_token, src_slot, permuted_probs, table, valid, barrier,
            stride, result, seq);
}
