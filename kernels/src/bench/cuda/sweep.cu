// Tuning sweep of the row kernels, outside the shipped fatbins: the shipped permute and unpermute
// kernels (the production sources are included, not copied) side by side with candidate variants,
// on the CudaBenchmark shapes, BF16. Each variant's output is compared byte for byte with the
// shipped kernel's; ratio = time of a same-run cudaMemcpyAsync (device to device) of half the
// operation's traffic / time of the operation; medians of `iters` runs by CUDA events.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -cudart static -o sweep kernels/src/bench/cuda/sweep.cu
//   ./sweep [iters]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../main/cuda/permute.cu"
#include "../../main/cuda/unpermute.cu"

#define CK(x)                                                                    \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

namespace moeprep {

// Candidate unpermute: the warp-per-token step of the shipped kernel, over balanced contiguous
// ranges of (token, step) items per warp on a grid of resident blocks, with the next token's row
// ids and probs loaded while the current token's steps run (and probs not waiting for the ids).
template <typename D, int V, int kU, int kSlots>
__device__ void unpermute_items(const void* __restrict__ expert_out,
                                const int32_t* __restrict__ row_id_map,
                                const float* __restrict__ probs, void* __restrict__ out,
                                int64_t n, int32_t k, int64_t units) {
  using U = typename Unit<V>::type;
  using S = typename D::storage;
  constexpr int kElems = V / static_cast<int>(sizeof(S));
  union Packed {
    U unit;
    S elems[kElems];
  };
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t steps = (units + 32 * kU - 1) / (32 * kU);
  const int64_t items = n * steps;
  const int64_t begin = RowTile::bound(items, warp, warps);
  const int64_t end = RowTile::bound(items, warp + 1, warps);
  if (begin >= end) {
    return;
  }
  const U* src = static_cast<const U*>(expert_out);
  int64_t t = begin / steps;
  int64_t step = begin % steps;
  const int64_t last = (end - 1) / steps;
  int32_t r = lane < k ? row_id_map[t * k + lane] : -1;
  float p = lane < k && probs != nullptr ? probs[t * k + lane] : 1.0f;
  int32_t rn = -1;
  float pn = 1.0f;
  if (t < last) {
    rn = lane < k ? row_id_map[(t + 1) * k + lane] : -1;
    pn = lane < k && probs != nullptr ? probs[(t + 1) * k + lane] : 1.0f;
  }
  for (int64_t i = begin; i < end; i++) {
    const int64_t u0 = step * 32 * kU + lane;
    float acc[kU][kElems];
#pragma unroll
    for (int j = 0; j < kU; j++) {
#pragma unroll
      for (int e = 0; e < kElems; e++) {
        acc[j][e] = 0.0f;
      }
    }
    for (int32_t s0 = 0; s0 < k; s0 += 32) {
      int32_t rr = r;
      float pp = p;
      if (s0 > 0) {
        rr = s0 + lane < k ? row_id_map[t * k + s0 + lane] : -1;
        pp = s0 + lane < k && probs != nullptr ? probs[t * k + s0 + lane] : 1.0f;
      }
      unsigned kept = __ballot_sync(kAll, rr >= 0);
      while (kept != 0) {
        int32_t row[kSlots];
        float w[kSlots];
#pragma unroll
        for (int b = 0; b < kSlots; b++) {
          const int s = kept != 0 ? __ffs(kept) - 1 : -1;
          kept = kept != 0 ? kept & (kept - 1) : 0;
          row[b] = __shfl_sync(kAll, rr, s < 0 ? 0 : s);
          w[b] = __shfl_sync(kAll, pp, s < 0 ? 0 : s);
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
            for (int e = 0; e < kElems; e++) {
              acc[j][e] = __fadd_rn(acc[j][e], __fmul_rn(w[b], D::decode(x[b][j].elems[e])));
            }
          }
        }
      }
    }
    U* dst = static_cast<U*>(out) + t * units;
#pragma unroll
    for (int j = 0; j < kU; j++) {
      const int64_t u = u0 + 32 * j;
      if (u < units) {
        Packed y;
#pragma unroll
        for (int e = 0; e < kElems; e++) {
          y.elems[e] = static_cast<S>(D::encode(acc[j][e]));
        }
        dst[u] = y.unit;
      }
    }
    if (++step == steps) {
      step = 0;
      t++;
      r = rn;
      p = pn;
      if (t < last) {
        rn = lane < k ? row_id_map[(t + 1) * k + lane] : -1;
        pn = lane < k && probs != nullptr ? probs[(t + 1) * k + lane] : 1.0f;
      }
    }
  }
}

// Candidate: the shipped grid-stride kernel with the next token's ids prefetched into registers
// and probs loaded without waiting for the ids.
template <typename D, int V, int kU, int kSlots>
__device__ void unpermute_prefetch(const void* __restrict__ expert_out,
                                   const int32_t* __restrict__ row_id_map,
                                   const float* __restrict__ probs, void* __restrict__ out,
                                   int64_t n, int32_t k, int64_t units) {
  using U = typename Unit<V>::type;
  using S = typename D::storage;
  constexpr int kElems = V / static_cast<int>(sizeof(S));
  union Packed {
    U unit;
    S elems[kElems];
  };
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const U* src = static_cast<const U*>(expert_out);
  int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  int32_t rn = t < n && lane < k ? row_id_map[t * k + lane] : -1;
  float pn = t < n && lane < k && probs != nullptr ? probs[t * k + lane] : 1.0f;
  for (; t < n; t += warps) {
    const int32_t r0 = rn;
    const float p0 = pn;
    if (t + warps < n) {
      rn = lane < k ? row_id_map[(t + warps) * k + lane] : -1;
      pn = lane < k && probs != nullptr ? probs[(t + warps) * k + lane] : 1.0f;
    }
    const unsigned kept0 = __ballot_sync(kAll, r0 >= 0);
    U* dst = static_cast<U*>(out) + t * units;
    for (int64_t base = 0; base < units; base += 32 * kU) {
      const int64_t u0 = base + lane;
      float acc[kU][kElems];
#pragma unroll
      for (int j = 0; j < kU; j++) {
#pragma unroll
        for (int e = 0; e < kElems; e++) {
          acc[j][e] = 0.0f;
        }
      }
      for (int32_t s0 = 0; s0 < k; s0 += 32) {
        int32_t r = r0;
        float p = p0;
        unsigned kept = kept0;
        if (s0 > 0) {
          r = s0 + lane < k ? row_id_map[t * k + s0 + lane] : -1;
          p = s0 + lane < k && probs != nullptr ? probs[t * k + s0 + lane] : 1.0f;
          kept = __ballot_sync(kAll, r >= 0);
        }
        while (kept != 0) {
          int32_t row[kSlots];
          float w[kSlots];
#pragma unroll
          for (int b = 0; b < kSlots; b++) {
            const int s = kept != 0 ? __ffs(kept) - 1 : -1;
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
              for (int e = 0; e < kElems; e++) {
                acc[j][e] = __fadd_rn(acc[j][e], __fmul_rn(w[b], D::decode(x[b][j].elems[e])));
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
          for (int e = 0; e < kElems; e++) {
            y.elems[e] = static_cast<S>(D::encode(acc[j][e]));
          }
          dst[u] = y.unit;
        }
      }
    }
  }
}

// Candidate permute: the shipped one with streaming (evict-first) stores of the output rows.
template <int kUnroll>
__device__ void permute_rows_cs(const uint4* __restrict__ src_base,
                                const int32_t* __restrict__ row_id_map, uint4* __restrict__ dst_base,
                                int64_t n, int32_t k, int64_t units, int32_t lanes) {
  const RowTile tile(lanes, n);
  for (int64_t g = tile.group_begin; g < tile.group_end; g++) {
    const int64_t t = tile.row(g);
    if (t >= n) {
      break;
    }
    const uint4* src = src_base + t * units;
    const int32_t* rows = row_id_map + t * k;
    if (g + 1 < tile.group_end && tile.lane == 0) {
      prefetch_l1(row_id_map + tile.row(g + 1) * k);
    }
    bool kept = false;
    for (int32_t s = 0; s < k && !kept; s++) {
      kept = rows[s] >= 0;
    }
    if (!kept) {
      continue;
    }
    for (int64_t u0 = tile.lane; u0 < units; u0 += static_cast<int64_t>(lanes) * kUnroll) {
      uint4 v[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
        if (u < units) {
          v[j] = __ldcs(src + u);
        }
      }
      for (int32_t s = 0; s < k; s++) {
        const int32_t row = rows[s];
        if (row < 0) {
          continue;
        }
        uint4* dst = dst_base + static_cast<int64_t>(row) * units;
#pragma unroll
        for (int j = 0; j < kUnroll; j++) {
          const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
          if (u < units) {
            __stcs(dst + u, v[j]);
          }
        }
      }
    }
  }
}

}  // namespace moeprep

extern "C" __global__ void __launch_bounds__(kBlockThreads)
    sweep_unpermute_items(const void* e, const int32_t* m, const float* p, void* o, int64_t n,
                          int32_t k, int64_t u) {
  unpermute_items<BF16, 16, 4, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads)
    sweep_unpermute_items_pairs(const void* e, const int32_t* m, const float* p, void* o,
                                int64_t n, int32_t k, int64_t u) {
  unpermute_items<BF16, 16, 4, 2>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads)
    sweep_unpermute_items_u8(const void* e, const int32_t* m, const float* p, void* o, int64_t n,
                             int32_t k, int64_t u) {
  unpermute_items<BF16, 16, 8, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads)
    sweep_unpermute_prefetch(const void* e, const int32_t* m, const float* p, void* o, int64_t n,
                             int32_t k, int64_t u) {
  unpermute_prefetch<BF16, 16, 4, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads)
    sweep_unpermute_prefetch_pairs(const void* e, const int32_t* m, const float* p, void* o,
                                   int64_t n, int32_t k, int64_t u) {
  unpermute_prefetch<BF16, 16, 4, 2>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads, 3)
    sweep_unpermute_items_b3(const void* e, const int32_t* m, const float* p, void* o, int64_t n,
                             int32_t k, int64_t u) {
  unpermute_items<BF16, 16, 4, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads, 3)
    sweep_unpermute_prefetch_b3(const void* e, const int32_t* m, const float* p, void* o,
                                int64_t n, int32_t k, int64_t u) {
  unpermute_prefetch<BF16, 16, 4, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads, 2)
    sweep_unpermute_items_u8b2(const void* e, const int32_t* m, const float* p, void* o,
                               int64_t n, int32_t k, int64_t u) {
  unpermute_items<BF16, 16, 8, 1>(e, m, p, o, n, k, u);
}
extern "C" __global__ void __launch_bounds__(kBlockThreads, 1)
    sweep_permute_cs(const uint4* t, const int32_t* m, uint4* o, int64_t n, int32_t k, int64_t u,
                     int32_t lanes) {
  permute_rows_cs<8>(t, m, o, n, k, u, lanes);
}

namespace {

struct Shape {
  int64_t n;
  int e;
  int h;
  int k;
  int ep;
  int rank;
};

__global__ void fill_bits(uint16_t* p, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    // finite BF16 values in about [-4, 4]
    p[i] = static_cast<uint16_t>((x & 0x80FFu) | (0x3E00u + ((x >> 8) & 0x0100u)));
  }
}

int sms = 0;
int iters = 50;

float median(cudaStream_t s, const std::function<void()>& op) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 10; i++) {
    op();
  }
  CK(cudaStreamSynchronize(s));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(a, s));
    op();
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms[i], a, b));
  }
  CK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms[iters / 2];
}

int resident(const void* kernel) {
  int per = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, kBlockThreads, 0));
  return per * sms;
}

__global__ void hash_words(const unsigned long long* p, int64_t count, unsigned long long* h) {
  unsigned long long a = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    unsigned long long x = (p[i] + static_cast<unsigned long long>(i)) * 0x9E3779B97F4A7C15ull;
    a += x ^ (x >> 29);
  }
  atomicAdd(h, a);
}

// an order-independent, position-sensitive hash of the bytes (a multiple of 8) on the device
unsigned long long hash(const void* p, size_t bytes) {
  unsigned long long* d;
  unsigned long long h = 0;
  CK(cudaMalloc(&d, 8));
  CK(cudaMemset(d, 0, 8));
  hash_words<<<sms * 8, 256>>>(static_cast<const unsigned long long*>(p), bytes / 8, d);
  CK(cudaMemcpy(&h, d, 8, cudaMemcpyDeviceToHost));
  CK(cudaFree(d));
  return h;
}

void run(const Shape& c) {
  const int64_t n = c.n;
  const int k = c.k;
  const int64_t units = c.h * 2 / 16;
  const int64_t row_bytes = c.h * 2LL;
  // routing: k distinct uniform experts per token; row map by a stable counting sort by expert
  std::mt19937_64 rng(42);
  std::vector<int> ids(n * k);
  std::vector<int> perm(c.e);
  for (int64_t t = 0; t < n; t++) {
    for (int i = 0; i < c.e; i++) perm[i] = i;
    for (int j = 0; j < k; j++) {
      int pick = j + static_cast<int>(rng() % (c.e - j));
      std::swap(perm[j], perm[pick]);
      ids[t * k + j] = perm[j];
    }
  }
  const int lo = c.rank < 0 ? 0 : c.e / c.ep * c.rank;
  const int hi = c.rank < 0 ? c.e : lo + c.e / c.ep;
  std::vector<int64_t> count(c.e + 1, 0);
  int64_t read_rows = 0;
  for (int64_t t = 0; t < n; t++) {
    bool any = false;
    for (int j = 0; j < k; j++) {
      int x = ids[t * k + j];
      if (x >= lo && x < hi) {
        count[x + 1]++;
        any = true;
      }
    }
    read_rows += any;
  }
  for (int x = 0; x < c.e; x++) count[x + 1] += count[x];
  const int64_t num_out = count[c.e];
  std::vector<int32_t> map(n * k, -1);
  for (int64_t t = 0; t < n; t++) {
    for (int j = 0; j < k; j++) {
      int x = ids[t * k + j];
      if (x >= lo && x < hi) map[t * k + j] = static_cast<int32_t>(count[x]++);
    }
  }
  std::vector<float> probs(n * k);
  for (auto& p : probs) p = static_cast<float>(rng() % 1000003) / 1000003.0f;

  const int64_t perm_bytes = (read_rows + num_out) * row_bytes;
  const int64_t unperm_bytes = (num_out + n) * row_bytes;
  void *tokens, *permuted, *out, *copy;
  int32_t* dmap;
  float* dprobs;
  CK(cudaMalloc(&tokens, n * row_bytes));
  CK(cudaMalloc(&permuted, num_out * row_bytes));
  CK(cudaMalloc(&out, n * row_bytes));
  CK(cudaMalloc(&copy, std::max(perm_bytes, unperm_bytes) / 2));
  CK(cudaMalloc(&dmap, n * k * 4));
  CK(cudaMalloc(&dprobs, n * k * 4));
  CK(cudaMemcpy(dmap, map.data(), n * k * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dprobs, probs.data(), n * k * 4, cudaMemcpyHostToDevice));
  fill_bits<<<sms * 8, 256>>>(static_cast<uint16_t*>(tokens), n * c.h, 1);
  CK(cudaDeviceSynchronize());
  cudaStream_t s = 0;
  const void* csrc = num_out >= n ? permuted : out;  // holds half of either operation's traffic
  char label[96];
  std::snprintf(label, sizeof label, "N=%lld E=%d H=%d K=%d%s", static_cast<long long>(n), c.e, c.h,
                k, c.rank >= 0 ? " rank 0/8" : "");
  auto report = [&](const char* op, const char* variant, float ms, float copy_ms, bool ok) {
    std::printf("| %-34s | %-9s | %-26s | %8.4f | %8.4f | %6.3f | %s |\n", label, op, variant, ms,
                copy_ms, copy_ms / ms, ok ? "same bytes" : "DIFFERENT");
    std::fflush(stdout);
  };

  // permute
  {
    const int lanes = 128;  // as PermuteLauncher for 896 units of 16 bytes (and 512: 64)
    const int pl = units == 512 ? 64 : lanes;
    auto grid = [&](int per_sm) {
      int64_t per_block = kBlockThreads / pl;
      return static_cast<int>(std::min<int64_t>((n + per_block - 1) / per_block, sms * per_sm));
    };
    auto shipped = [&](int g) {
      moeprep_permute_rows_v16<<<g, kBlockThreads, 0, s>>>(tokens, dmap, permuted, n, k, units, pl);
    };
    float copy_ms = median(s, [&] { cudaMemcpyAsync(copy, csrc, perm_bytes / 2, cudaMemcpyDeviceToDevice, s); });
    report("permute", "shipped (32 blocks/SM)", median(s, [&] { shipped(grid(32)); }), copy_ms, true);
    CK(cudaMemset(permuted, 0, num_out * row_bytes));
    shipped(grid(32));
    const unsigned long long want = hash(permuted, num_out * row_bytes);
    for (int per : {2, 4}) {
      CK(cudaMemsetAsync(permuted, 0, num_out * row_bytes, s));
      moeprep_permute_rows_v16<<<grid(per), kBlockThreads, 0, s>>>(tokens, dmap, permuted, n, k, units, pl);
      bool ok = hash(permuted, num_out * row_bytes) == want;
      std::string v = "shipped, " + std::to_string(per) + " blocks/SM";
      report("permute", v.c_str(), median(s, [&] { moeprep_permute_rows_v16<<<grid(per), kBlockThreads, 0, s>>>(tokens, dmap, permuted, n, k, units, pl); }), copy_ms, ok);
    }
    CK(cudaMemsetAsync(permuted, 0, num_out * row_bytes, s));
    auto cs = [&] {
      sweep_permute_cs<<<grid(32), kBlockThreads, 0, s>>>(static_cast<const uint4*>(tokens), dmap,
                                                          static_cast<uint4*>(permuted), n, k, units, pl);
    };
    cs();
    bool ok = hash(permuted, num_out * row_bytes) == want;
    report("permute", "ldcs/stcs", median(s, cs), copy_ms, ok);
    report("permute", "shipped again", median(s, [&] { shipped(grid(32)); }), copy_ms, true);
  }

  // unpermute, expert outputs = random BF16 (the permute's output)
  fill_bits<<<sms * 8, 256>>>(static_cast<uint16_t*>(permuted), num_out * c.h, 7);
  CK(cudaDeviceSynchronize());
  {
    const bool pairs = num_out >= 2 * n;
    auto kernel = pairs ? moeprep_unpermute_bf16_v16_pairs : moeprep_unpermute_bf16_v16;
    const int g = static_cast<int>(std::min<int64_t>((n + 7) / 8, sms * 32LL));
    auto shipped = [&] { kernel<<<g, kBlockThreads, 0, s>>>(permuted, dmap, dprobs, out, n, k, units); };
    float copy_ms = median(s, [&] { cudaMemcpyAsync(copy, csrc, unperm_bytes / 2, cudaMemcpyDeviceToDevice, s); });
    report("unpermute", pairs ? "shipped (_pairs)" : "shipped", median(s, shipped), copy_ms, true);
    CK(cudaMemsetAsync(out, 0xFF, n * row_bytes, s));
    shipped();
    const unsigned long long want = hash(out, n * row_bytes);
    struct Variant {
      const char* name;
      decltype(&sweep_unpermute_items) f;
      bool persistent;
    };
    std::vector<Variant> vs = {
        {"prefetch", pairs ? sweep_unpermute_prefetch_pairs : sweep_unpermute_prefetch, false},
        {"items", pairs ? sweep_unpermute_items_pairs : sweep_unpermute_items, true},
        {"items, all resident x2", pairs ? sweep_unpermute_items_pairs : sweep_unpermute_items, true},
    };
    if (!pairs) {
      vs.push_back({"prefetch, 3 blocks/SM", sweep_unpermute_prefetch_b3, false});
      vs.push_back({"items, 3 blocks/SM", sweep_unpermute_items_b3, true});
      vs.push_back({"items u8", sweep_unpermute_items_u8, true});
      vs.push_back({"items u8, 2 blocks/SM", sweep_unpermute_items_u8b2, true});
    }
    for (size_t i = 0; i < vs.size(); i++) {
      const Variant& v = vs[i];
      int vg = v.persistent ? resident(reinterpret_cast<const void*>(v.f)) : g;
      if (i == 2) vg *= 2;
      CK(cudaMemsetAsync(out, 0xFF, n * row_bytes, s));
      auto op = [&] { v.f<<<vg, kBlockThreads, 0, s>>>(permuted, dmap, dprobs, out, n, k, units); };
      op();
      bool ok = hash(out, n * row_bytes) == want;
      std::string name = std::string(v.name) + " (" + std::to_string(vg) + " blocks)";
      report("unpermute", name.c_str(), median(s, op), copy_ms, ok);
    }
    report("unpermute", "shipped again", median(s, shipped), copy_ms, true);
  }
  CK(cudaFree(tokens));
  CK(cudaFree(permuted));
  CK(cudaFree(out));
  CK(cudaFree(copy));
  CK(cudaFree(dmap));
  CK(cudaFree(dprobs));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) iters = std::atoi(argv[1]);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, median of %d\n", prop.name, sms, iters);
  const Shape shapes[] = {{4096, 256, 7168, 8, 1, -1},
                          {16384, 128, 4096, 6, 1, -1},
                          {16384, 4, 7168, 1, 1, -1},
                          {262144, 256, 7168, 8, 8, 0},
                          {262144, 256, 7168, 8, 1, -1}};
  for (const Shape& c : shapes) run(c);
  return 0;
}
