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

// Thread mapping: as unpermute_rows, but the kBatch rows loaded together are the next kept slots
// of the thread's consecutive tokens (a block's tokens are contiguous), not of one token, so that
// batches stay full when tokens have about one kept slot (K = 1, or masked to a rank). Sums are
// stored when the walk passes a token (zeros for tokens without a kept slot); each token's slots
// are still accumulated in slot order.
// Shapes: as unpermute_rows.
template <typename D, int V, int kBatch, int kUnroll>
__device__ void unpermute_rows_sparse(const void* __restrict__ expert_out,
                                      const int32_t* __restrict__ row_id_map,
                                      const float* __restrict__ probs, void* __restrict__ out,
                                      int64_t n, int32_t k, int64_t units, int32_t lanes) {
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
  for (int64_t u0 = tile.lane; u0 < units; u0 += static_cast<int64_t>(lanes) * kUnroll) {
    float acc[kUnroll][kElems];
#pragma unroll
    for (int j = 0; j < kUnroll; j++) {
#pragma unroll
      for (int i = 0; i < kElems; i++) {
        acc[j][i] = 0.0f;
      }
    }
    // stores the open token's sums (row group g) and resets them
    auto flush = [&](int64_t g) {
      U* dst = dst_base + tile.row(g) * units;
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
        if (u < units) {
          Packed y;
#pragma unroll
          for (int i = 0; i < kElems; i++) {
            y.elems[i] = static_cast<S>(D::encode(acc[j][i]));
            acc[j][i] = 0.0f;
          }
          dst[u] = y.unit;
        }
      }
    };
    int64_t open = tile.group_begin;  // the token whose sums acc holds
    int64_t scan_g = tile.group_begin;
    int32_t scan_s = 0;
    while (true) {
      int64_t item_g[kBatch];
      int32_t item_row[kBatch];
      int64_t item_slot[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        item_g[b] = 0;
        item_row[b] = -1;
        item_slot[b] = 0;
      }
      int cnt = 0;
      while (scan_g < tile.group_end && cnt < kBatch) {
        const int64_t t = tile.row(scan_g);
        if (t >= n) {
          scan_g = tile.group_end;
          break;
        }
        const int64_t s = t * k + scan_s;
        const int32_t r = row_id_map[s];
        if (r >= 0) {
#pragma unroll
          for (int b = 0; b < kBatch; b++) {
            if (b == cnt) {
              item_g[b] = scan_g;
              item_row[b] = r;
              item_slot[b] = s;
            }
          }
          cnt++;
        }
        if (++scan_s == k) {
          scan_s = 0;
          scan_g++;
        }
      }
      if (cnt == 0) {
        break;
      }
      Packed x[kBatch][kUnroll];
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
#pragma unroll
        for (int j = 0; j < kUnroll; j++) {
          const int64_t u = u0 + static_cast<int64_t>(j) * lanes;
          if (item_row[b] >= 0 && u < units) {
            x[b][j].unit = src_base[static_cast<int64_t>(item_row[b]) * units + u];
          }
        }
      }
      float p[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        p[b] = item_row[b] >= 0 && probs != nullptr ? probs[item_slot[b]] : 1.0f;
      }
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        if (item_row[b] < 0) {
          continue;
        }
        while (open < item_g[b]) {
          flush(open);
          open++;
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
    for (; open < tile.group_end && tile.row(open) < n; open++) {
      flush(open);
    }
  }
}

}  // namespace moeprep

using namespace moeprep;

// Instantiations: kBatch = 2 rows of kUnroll = 4 units in flight; the _sparse kernels batch across
// tokens, for about one kept slot per token (K = 1, or masked to a rank). MINB: the blocks per SM
// to fit (caps registers), 1 = no cap. The suffixed bf16 ones are tuning variants for benchmarks.
#define MOEPREP_UNPERMUTE(DT, NAME, V, BATCH, UNROLL, MINB, SUFFIX)                              \
  extern "C" __global__ void __launch_bounds__(kBlockThreads, MINB)                              \
      moeprep_unpermute_##NAME##_v##V##SUFFIX(const void* expert_out, const int32_t* row_id_map, \
                                              const float* probs, void* out, int64_t n,          \
                                              int32_t k, int64_t units, int32_t lanes) {         \
    unpermute_rows<DT, V, BATCH, UNROLL>(expert_out, row_id_map, probs, out, n, k, units,        \
                                         lanes);                                                 \
  }
#define MOEPREP_UNPERMUTE_SPARSE(DT, NAME, V, BATCH, UNROLL, SUFFIX)                            \
  extern "C" __global__ void __launch_bounds__(kBlockThreads)                                    \
      moeprep_unpermute_##NAME##_v##V##SUFFIX(const void* expert_out, const int32_t* row_id_map, \
                                              const float* probs, void* out, int64_t n,          \
                                              int32_t k, int64_t units, int32_t lanes) {         \
    unpermute_rows_sparse<DT, V, BATCH, UNROLL>(expert_out, row_id_map, probs, out, n, k, units, \
                                                lanes);                                          \
  }
#define MOEPREP_UNPERMUTE_DTYPE(DT, NAME)                   \
  MOEPREP_UNPERMUTE(DT, NAME, 16, 2, 4, 1, )                \
  MOEPREP_UNPERMUTE_SPARSE(DT, NAME, 16, 2, 4, _sparse)     \
  MOEPREP_UNPERMUTE(DT, NAME, 8, 2, 4, 1, )                 \
  MOEPREP_UNPERMUTE(DT, NAME, 4, 2, 4, 1, )
MOEPREP_UNPERMUTE_DTYPE(F32, f32)
MOEPREP_UNPERMUTE_DTYPE(BF16, bf16)
MOEPREP_UNPERMUTE_DTYPE(F16, f16)
MOEPREP_UNPERMUTE(BF16, bf16, 2, 2, 4, 1, )
MOEPREP_UNPERMUTE(F16, f16, 2, 2, 4, 1, )
// tuning variants, chosen with -Dmoeprep.cuda.unpermuteVariant (benchmarks)
MOEPREP_UNPERMUTE(BF16, bf16, 16, 1, 4, 1, _b1u4)
MOEPREP_UNPERMUTE_SPARSE(BF16, bf16, 16, 4, 2, _s4u2)
MOEPREP_UNPERMUTE_SPARSE(BF16, bf16, 16, 4, 4, _s4u4)
