// Tuning sweep of the row kernels, outside the shipped fatbins: the shipped permute and unpermute
// kernels (the production sources are included, not copied) side by side with candidate variants,
// on the CudaBenchmark shapes, BF16. The variants here are the last ones measured (instantiations
// of the shipped templates with other parameters; the ring's other sizes of the README are one
// SWEEP_STAGED line each); the first sweep's kernels are in this file's history (e100bd8), and
// every figure is in kernels/src/main/cuda/README.md. Each variant's output is compared byte for byte with the
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

// unpermute_staged candidates: kU units per lane per chunk, kStages chunks in the ring
#define SWEEP_STAGED(KU, ST, B)                                                                \
  extern "C" __global__ void __launch_bounds__(kBlockThreads, B)                               \
      sweep_staged_u##KU##_s##ST##_b##B(const void* e, const int32_t* m, const float* p,       \
                                        void* o, int64_t n, int32_t k, int64_t u) {            \
    unpermute_staged<BF16, 16, KU, ST>(e, m, p, o, n, k, u);                                   \
  }
SWEEP_STAGED(4, 3, 3)
SWEEP_STAGED(2, 6, 4)
SWEEP_STAGED(2, 3, 5)

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
  }

  // unpermute, expert outputs = random BF16 (the permute's output)
  fill_bits<<<sms * 8, 256>>>(static_cast<uint16_t*>(permuted), num_out * c.h, 7);
  CK(cudaDeviceSynchronize());
  {
    auto kernel = moeprep_unpermute_bf16_v16;
    const int g = static_cast<int>(std::min<int64_t>((n + 7) / 8, sms * 32LL));
    auto shipped = [&] { kernel<<<g, kBlockThreads, 0, s>>>(permuted, dmap, dprobs, out, n, k, units); };
    float copy_ms = median(s, [&] { cudaMemcpyAsync(copy, csrc, unperm_bytes / 2, cudaMemcpyDeviceToDevice, s); });
    report("unpermute", "shipped", median(s, shipped), copy_ms, true);
    CK(cudaMemsetAsync(out, 0xFF, n * row_bytes, s));
    shipped();
    const unsigned long long want = hash(out, n * row_bytes);
    struct Variant {
      const char* name;
      decltype(&sweep_staged_u4_s3_b3) f;
    };
    std::vector<Variant> vs = {
        {"staged u4 s3, >= 3 blocks/SM", sweep_staged_u4_s3_b3},
        {"staged u2 s6, >= 4 blocks/SM", sweep_staged_u2_s6_b4},
        {"staged u2 s3, >= 5 blocks/SM", sweep_staged_u2_s3_b5},
    };
    for (size_t i = 0; i < vs.size(); i++) {
      const Variant& v = vs[i];
      CK(cudaMemsetAsync(out, 0xFF, n * row_bytes, s));
      auto op = [&] { v.f<<<g, kBlockThreads, 0, s>>>(permuted, dmap, dprobs, out, n, k, units); };
      op();
      bool ok = hash(out, n * row_bytes) == want;
      std::string name = std::string(v.name) + " (" + std::to_string(resident(reinterpret_cast<const void*>(v.f)) / sms) + "/SM)";
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
