// Shared device helpers of the MoePrep kernels: row tiling, vector units, and the contract's
// element conversions (the integer algorithms of contract/Numerics.java, bit for bit).
#pragma once

#include <cstdint>

namespace moeprep {

// Every kernel is launched with this many threads per block unless its comment says otherwise.
constexpr int kBlockThreads = 256;

// A row of `row_bytes` bytes is moved as `row_bytes / V` units of V bytes; the host picks the
// largest V in {16, 8, 4, 2, 1} that divides the row bytes and every base address, so that any
// hidden width is correct and aligned rows get 16-byte accesses.
template <int V> struct Unit;
template <> struct Unit<16> { using type = uint4; };
template <> struct Unit<8> { using type = uint2; };
template <> struct Unit<4> { using type = uint32_t; };
template <> struct Unit<2> { using type = uint16_t; };
template <> struct Unit<1> { using type = uint8_t; };

// Row tiling: `lanes` threads (a power of two dividing the block) share one row, so a block covers
// rows_per_block = blockDim.x / lanes rows at a time. Block b owns the contiguous row groups
// [groups*b/gridDim.x, groups*(b+1)/gridDim.x) (64-bit), so that consecutive rows of a block share
// cache lines of the row map.
struct RowTile {
  int32_t lanes;
  int32_t lane;
  int32_t rows_per_block;
  int32_t row_in_block;
  int64_t group_begin;
  int64_t group_end;

  __device__ RowTile(int32_t lanes_per_row, int64_t rows)
      : lanes(lanes_per_row),
        lane(static_cast<int32_t>(threadIdx.x) & (lanes_per_row - 1)),
        rows_per_block(static_cast<int32_t>(blockDim.x) / lanes_per_row),
        row_in_block(static_cast<int32_t>(threadIdx.x) / lanes_per_row) {
    const int64_t groups = (rows + rows_per_block - 1) / rows_per_block;
    group_begin = bound(groups, blockIdx.x, gridDim.x);
    group_end = bound(groups, blockIdx.x + 1, gridDim.x);
  }

  // floor(n * c / parts) without overflow
  __device__ static int64_t bound(int64_t n, int64_t c, int64_t parts) {
    return n / parts * c + (n % parts) * c / parts;
  }

  // the row of this thread in row group g
  __device__ int64_t row(int64_t g) const {
    return g * rows_per_block + row_in_block;
  }
};

// Asks for the cache line at p in L1, without waiting (the row map of the next row).
__device__ __forceinline__ void prefetch_l1(const void* p) {
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

// Copies one unit from global to shared memory: asynchronously for units of 4, 8 and 16 bytes
// (cp.async, sm_80 and later: no register holds the data, copy_commit groups the copies issued
// since the last group and copy_wait<N> waits until at most N groups are pending), directly for
// smaller units. A thread reads back only what it copied itself.
template <int V>
__device__ __forceinline__ void copy_to_shared(typename Unit<V>::type* dst,
                                               const typename Unit<V>::type* src) {
  if constexpr (V == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                     static_cast<unsigned>(__cvta_generic_to_shared(dst))),
                 "l"(src)
                 : "memory");
  } else if constexpr (V >= 4) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(
                     static_cast<unsigned>(__cvta_generic_to_shared(dst))),
                 "l"(src), "n"(V)
                 : "memory");
  } else {
    *dst = *src;
  }
}

__device__ __forceinline__ void copy_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void copy_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ---- element conversions (contract, Numerics.java) ----

struct F32 {
  using storage = uint32_t;
  __device__ static float decode(uint32_t b) { return __uint_as_float(b); }
  // canonical NaN 0x7FC00000, every other value unchanged
  __device__ static uint32_t encode(float f) {
    uint32_t x = __float_as_uint(f);
    return (x & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : x;
  }
};

struct BF16 {
  using storage = uint16_t;
  __device__ static float decode(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
  // round to nearest even; NaN -> 0x7FC0
  __device__ static uint16_t encode(float f) {
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
      return 0x7FC0u;
    }
    uint32_t lsb = (x >> 16) & 1u;
    return static_cast<uint16_t>((x + 0x7FFFu + lsb) >> 16);
  }
};

struct F16 {
  using storage = uint16_t;
  __device__ static float decode(uint16_t bits) {
    uint32_t h = bits;
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0) {
      // mant * 2^-24 is exact in float32
      float v = __fmul_rn(static_cast<float>(mant), 5.9604644775390625e-8f);
      return sign != 0 ? -v : v;
    }
    if (exp == 31) {
      return __uint_as_float(sign | 0x7F800000u | (mant << 13));
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }
  // round to nearest even with subnormals; NaN -> 0x7E00
  __device__ static uint16_t encode(float f) {
    uint32_t x = __float_as_uint(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) {
      return 0x7E00u;
    }
    if (abs >= 0x477FF000u) {  // 65520 and above round to infinity
      return static_cast<uint16_t>(sign | 0x7C00u);
    }
    if (abs >= 0x38800000u) {  // normal in F16: rebias by 112, round 13 mantissa bits
      uint32_t m = abs - 0x38000000u;
      m += 0xFFFu + ((m >> 13) & 1u);
      return static_cast<uint16_t>(sign | (m >> 13));
    }
    if (abs <= 0x33000000u) {  // at most half of the smallest subnormal: rounds to zero
      return static_cast<uint16_t>(sign);
    }
    uint32_t e = abs >> 23;
    uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u) == 1u)) {
      q++;
    }
    return static_cast<uint16_t>(sign | q);
  }
};

}  // namespace moeprep
