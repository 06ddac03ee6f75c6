// wte_kernels.cu - CUDA kernels for the edit's hot path (masked optimizer steps on the selected
// hidden neurons, gather-GEMM weight gradients for those neurons, per-sample delta apply).
//
// Compiled three ways from this one source (see cuda_shim.h): to PTX by clang (-x cuda -nocudainc
// -nocudalib) or nvcc, and as host C++ for the tests, which run the kernels through the fiber
// launcher (host_launch.h). The contract (signatures, launch shapes, layouts) is in README.md.
//
// Numerics: fp32 throughout, no fast-math, FMA only where written (wte_fma). Build with
// -ffp-contract=off (clang) / --fmad=false (nvcc) so that every other + and * is a separately
// rounded IEEE operation: the host emulation then computes bit-for-bit what the GPU computes.
#include "wte_kernels.h"

#if defined(WTE_CUDA)
#define WTE_UNROLL _Pragma("unroll")
#else
#define WTE_UNROLL
#endif

namespace {

// =================================================================================================
// Masked elementwise optimizer steps
// =================================================================================================
//
// Launch: any block/grid shape with blockDim.z == gridDim.z == 1; both grid dimensions are
// grid-strided, so every shape is correct. Selected rows (or columns) are spread over the y
// dimension (rows variants) / the x dimension (cols variants), the remaining dimension over the
// other one. Recommended shapes are in README.md.

struct RmsProp {
  float lr, alpha, one_minus_alpha, eps, weight_decay;

  // torch.optim.RMSprop single-tensor step, centered=False, momentum=0:
  //   grad = grad.add(param, alpha=wd)                       (only when wd != 0)
  //   square_avg.mul_(alpha).addcmul_(grad, grad, value=1-alpha)
  //   avg = square_avg.sqrt().add_(eps)
  //   param.addcdiv_(grad, avg, value=-lr)                   (= p - (lr*g)/avg, negation is exact)
  WTE_DEV void operator()(float* p, float* v, float g) const {
    const float pv = *p;
    if (weight_decay != 0.0f) g = g + weight_decay * pv;
    const float va = alpha * *v;
    const float vn = va + (one_minus_alpha * g) * g;
    *v = vn;
    const float denom = wte_sqrt(vn) + eps;
    *p = pv - wte_div(lr * g, denom);
  }
};

struct Sgd {
  float lr, weight_decay;

  // torch.optim.SGD, momentum=0: d_p = grad.add(param, alpha=wd) (only when wd != 0);
  // param.add_(d_p, alpha=-lr)  (= p - lr*d_p).
  WTE_DEV void operator()(float* p, float g) const {
    const float pv = *p;
    if (weight_decay != 0.0f) g = g + weight_decay * pv;
    *p = pv - lr * g;
  }
};

WTE_DEV void require_flat_z() {
  if (blockDim.z != 1 || gridDim.z != 1) WTE_TRAP("elementwise kernels need blockDim.z == gridDim.z == 1");
}

// idx[k] must be in [0, limit) and strictly greater than idx[k-1]: a duplicate would make two
// threads update the same element concurrently.
WTE_DEV int checked_index(const int* __restrict__ idx, long long k, int limit) {
  const int i = idx[k];
  if (static_cast<unsigned>(i) >= static_cast<unsigned>(limit) || (k > 0 && idx[k - 1] >= i))
    WTE_TRAP("index list entry out of range or not strictly increasing");
  return i;
}

// f(k, r, c) for every selected row r = idx[k] and every column c.
template <class F>
WTE_DEV void for_selected_rows(const int* __restrict__ idx, int K, int rows, int cols, F f) {
  require_flat_z();
  const long long ys = static_cast<long long>(blockDim.y) * gridDim.y;
  const long long xs = static_cast<long long>(blockDim.x) * gridDim.x;
  for (long long k = static_cast<long long>(blockIdx.y) * blockDim.y + threadIdx.y; k < K; k += ys) {
    const int r = checked_index(idx, k, rows);
    for (long long c = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += xs)
      f(k, static_cast<long long>(r), c);
  }
}

// f(k, r, c) for every row r and every selected column c = idx[k].
template <class F>
WTE_DEV void for_selected_cols(const int* __restrict__ idx, int K, int rows, int cols, F f) {
  require_flat_z();
  const long long ys = static_cast<long long>(blockDim.y) * gridDim.y;
  const long long xs = static_cast<long long>(blockDim.x) * gridDim.x;
  for (long long r = static_cast<long long>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows; r += ys)
    for (long long k = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; k < K; k += xs) {
      const int c = checked_index(idx, k, cols);
      f(k, r, static_cast<long long>(c));
    }
}

// =================================================================================================
// Tiled GEMM core:  C[m, n] = sum_r A(r, m) * B(r, n)   for m < M, n < N, r < R
// =================================================================================================
//
// blockDim must be (16, 16, 1). A block computes 64x64 tiles of C, grid-strided over the tiles
// (blockIdx.y -> m, blockIdx.x -> n), so any grid is correct; one block per tile is the natural
// launch. Thread (tx, ty) owns C[m0 + ty + 16i, n0 + tx + 16j], i, j < 4. Each step stages a 16-deep
// slice of A and B in shared memory (zero-padded past M, N, R) and accumulates with one fused
// multiply-add per product, r ascending: acc = fma(A(r,m), B(r,n), acc), starting from 0.
//
// la(r, m) / lb(r, n) load one element (called only in range). A_RC / B_RC say whether the operand
// is contiguous along r (then consecutive threads walk r, for coalescing) or along m / n.
// st(m, n, acc) stores one finished element (called only in range).
template <bool A_RC, bool B_RC, class LA, class LB, class ST>
WTE_DEV void tiled_gemm(int M, int N, int R, LA la, LB lb, ST st) {
  if (blockDim.x != WTE_TILE_THREADS || blockDim.y != WTE_TILE_THREADS || blockDim.z != 1)
    WTE_TRAP("tiled kernels need blockDim == (16, 16, 1)");

  // +1 column of padding: the transposed stores of the r-contiguous loads hit distinct banks.
  __shared__ float As[WTE_TILE_R][WTE_TILE + 1];
  __shared__ float Bs[WTE_TILE_R][WTE_TILE + 1];

  const int tx = static_cast<int>(threadIdx.x);
  const int ty = static_cast<int>(threadIdx.y);
  const int tid = ty * WTE_TILE_THREADS + tx;
  constexpr int kThreads = WTE_TILE_THREADS * WTE_TILE_THREADS;                 // 256
  constexpr int kLoads = WTE_TILE_R * WTE_TILE / kThreads;                      // 4 per operand

  for (long long m0 = static_cast<long long>(blockIdx.y) * WTE_TILE; m0 < M;
       m0 += static_cast<long long>(gridDim.y) * WTE_TILE) {
    for (long long n0 = static_cast<long long>(blockIdx.x) * WTE_TILE; n0 < N;
         n0 += static_cast<long long>(gridDim.x) * WTE_TILE) {
      float acc[4][4];
      WTE_UNROLL
      for (int i = 0; i < 4; ++i)
        WTE_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

      for (int r0 = 0; r0 < R; r0 += WTE_TILE_R) {
        WTE_UNROLL
        for (int q = 0; q < kLoads; ++q) {
          const int e = tid + q * kThreads;
          {
            const int kk = A_RC ? (e % WTE_TILE_R) : (e / WTE_TILE);
            const int mm = A_RC ? (e / WTE_TILE_R) : (e % WTE_TILE);
            const int r = r0 + kk;
            const long long m = m0 + mm;
            As[kk][mm] = (r < R && m < M) ? la(r, static_cast<int>(m)) : 0.0f;
          }
          {
            const int kk = B_RC ? (e % WTE_TILE_R) : (e / WTE_TILE);
            const int nn = B_RC ? (e / WTE_TILE_R) : (e % WTE_TILE);
            const int r = r0 + kk;
            const long long n = n0 + nn;
            Bs[kk][nn] = (r < R && n < N) ? lb(r, static_cast<int>(n)) : 0.0f;
          }
        }
        __syncthreads();
        WTE_UNROLL
        for (int kk = 0; kk < WTE_TILE_R; ++kk) {
          float a[4], b[4];
          WTE_UNROLL
          for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + WTE_TILE_THREADS * i];
          WTE_UNROLL
          for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + WTE_TILE_THREADS * j];
          WTE_UNROLL
          for (int i = 0; i < 4; ++i)
            WTE_UNROLL
            for (int j = 0; j < 4; ++j) acc[i][j] = wte_fma(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
      }

      WTE_UNROLL
      for (int i = 0; i < 4; ++i) {
        const long long m = m0 + ty + WTE_TILE_THREADS * i;
        if (m >= M) continue;
        WTE_UNROLL
        for (int j = 0; j < 4; ++j) {
          const long long n = n0 + tx + WTE_TILE_THREADS * j;
          if (n < N) st(static_cast<int>(m), static_cast<int>(n), acc[i][j]);
        }
      }
    }
  }
}

WTE_DEV int checked_gather(const int* __restrict__ idx, int k, int limit) {
  const int i = idx[k];
  if (static_cast<unsigned>(i) >= static_cast<unsigned>(limit)) WTE_TRAP("gather index out of range");
  return i;
}

}  // namespace

// =================================================================================================
// Kernels
// =================================================================================================

extern "C" __global__ void masked_rmsprop_rows(float* __restrict__ p, float* __restrict__ v,
                                               const float* __restrict__ grad, const int* __restrict__ idx, int K,
                                               int rows, int cols, float lr, float alpha, float one_minus_alpha,
                                               float eps, float weight_decay) {
  const RmsProp step{lr, alpha, one_minus_alpha, eps, weight_decay};
  for_selected_rows(idx, K, rows, cols, [=](long long, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, v + e, grad[e]);
  });
}

extern "C" __global__ void masked_rmsprop_cols(float* __restrict__ p, float* __restrict__ v,
                                               const float* __restrict__ grad, const int* __restrict__ idx, int K,
                                               int rows, int cols, float lr, float alpha, float one_minus_alpha,
                                               float eps, float weight_decay) {
  const RmsProp step{lr, alpha, one_minus_alpha, eps, weight_decay};
  for_selected_cols(idx, K, rows, cols, [=](long long, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, v + e, grad[e]);
  });
}

extern "C" __global__ void masked_rmsprop_rows_compact(float* __restrict__ p, float* __restrict__ v,
                                                       const float* __restrict__ grad, const int* __restrict__ idx,
                                                       int K, int rows, int cols, float lr, float alpha,
                                                       float one_minus_alpha, float eps, float weight_decay) {
  const RmsProp step{lr, alpha, one_minus_alpha, eps, weight_decay};
  for_selected_rows(idx, K, rows, cols, [=](long long k, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, v + e, grad[k * cols + c]);
  });
}

extern "C" __global__ void masked_rmsprop_cols_compact(float* __restrict__ p, float* __restrict__ v,
                                                       const float* __restrict__ grad, const int* __restrict__ idx,
                                                       int K, int rows, int cols, float lr, float alpha,
                                                       float one_minus_alpha, float eps, float weight_decay) {
  const RmsProp step{lr, alpha, one_minus_alpha, eps, weight_decay};
  for_selected_cols(idx, K, rows, cols, [=](long long k, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, v + e, grad[r * K + k]);
  });
}

extern "C" __global__ void masked_sgd_rows(float* __restrict__ p, const float* __restrict__ grad,
                                           const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                           float weight_decay) {
  const Sgd step{lr, weight_decay};
  for_selected_rows(idx, K, rows, cols, [=](long long, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, grad[e]);
  });
}

extern "C" __global__ void masked_sgd_cols(float* __restrict__ p, const float* __restrict__ grad,
                                           const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                           float weight_decay) {
  const Sgd step{lr, weight_decay};
  for_selected_cols(idx, K, rows, cols, [=](long long, long long r, long long c) {
    const long long e = r * cols + c;
    step(p + e, grad[e]);
  });
}

extern "C" __global__ void masked_sgd_rows_compact(float* __restrict__ p, const float* __restrict__ grad,
                                                   const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                                   float weight_decay) {
  const Sgd step{lr, weight_decay};
  for_selected_rows(idx, K, rows, cols, [=](long long k, long long r, long long c) {
    step(p + (r * cols + c), grad[k * cols + c]);
  });
}

extern "C" __global__ void masked_sgd_cols_compact(float* __restrict__ p, const float* __restrict__ grad,
                                                   const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                                   float weight_decay) {
  const Sgd step{lr, weight_decay};
  for_selected_cols(idx, K, rows, cols, [=](long long k, long long r, long long c) {
    step(p + (r * cols + c), grad[r * K + k]);
  });
}

// dW1c[k, d] (+)= sum_t dH[t, idx[k]] * X[t, d].   M = K (blockIdx.y), N = D (blockIdx.x), R = T.
extern "C" __global__ void dw1_rows_gather(float* __restrict__ dW1c, const float* __restrict__ dH,
                                           const float* __restrict__ X, const int* __restrict__ idx, int T, int D,
                                           int H, int K, int accumulate) {
  if (gridDim.z != 1) WTE_TRAP("dw1_rows_gather needs gridDim.z == 1");
  tiled_gemm<false, false>(
      K, D, T,
      [=](int t, int k) { return dH[static_cast<long long>(t) * H + checked_gather(idx, k, H)]; },
      [=](int t, int d) { return X[static_cast<long long>(t) * D + d]; },
      [=](int k, int d, float acc) {
        float* o = dW1c + (static_cast<long long>(k) * D + d);
        *o = accumulate ? *o + acc : acc;
      });
}

// dW2c[d, k] (+)= sum_t dY[t, d] * A[t, idx[k]].   M = D (blockIdx.y), N = K (blockIdx.x), R = T.
extern "C" __global__ void dw2_cols_gather(float* __restrict__ dW2c, const float* __restrict__ dY,
                                           const float* __restrict__ A, const int* __restrict__ idx, int T, int D,
                                           int H, int K, int accumulate) {
  if (gridDim.z != 1) WTE_TRAP("dw2_cols_gather needs gridDim.z == 1");
  tiled_gemm<false, false>(
      D, K, T,
      [=](int t, int d) { return dY[static_cast<long long>(t) * D + d]; },
      [=](int t, int k) { return A[static_cast<long long>(t) * H + checked_gather(idx, k, H)]; },
      [=](int d, int k, float acc) {
        float* o = dW2c + (static_cast<long long>(d) * K + k);
        *o = accumulate ? *o + acc : acc;
      });
}

// out[s, t, o] = sum_i X[s, t, i] * (W[o, i] + mask[s, o] * delta[s, o, i]) (+ bias[o]).
// M = T (blockIdx.y), N = O (blockIdx.x), R = I, samples over blockIdx.z (grid-strided).
extern "C" __global__ void per_sample_delta_rows(float* __restrict__ out, const float* __restrict__ X,
                                                 const float* __restrict__ W, const float* __restrict__ delta,
                                                 const float* __restrict__ mask, const float* __restrict__ bias, int S,
                                                 int T, int I, int O) {
  for (long long s = blockIdx.z; s < S; s += gridDim.z) {
    const float* __restrict__ Xs = X + s * T * I;
    const float* __restrict__ Ds = delta + s * O * I;
    const float* __restrict__ Ms = mask ? mask + s * O : nullptr;
    float* __restrict__ Os = out + s * T * O;
    tiled_gemm<true, true>(
        T, O, I,
        [=](int i, int t) { return Xs[static_cast<long long>(t) * I + i]; },
        [=](int i, int o) {
          const long long e = static_cast<long long>(o) * I + i;
          const float w = W[e];
          const float m = Ms ? Ms[o] : 1.0f;
          return m != 0.0f ? wte_fma(m, Ds[e], w) : w;
        },
        [=](int t, int o, float acc) { Os[static_cast<long long>(t) * O + o] = bias ? acc + bias[o] : acc; });
  }
}

// out[s, t, o] = sum_i X[s, t, i] * (W[o, i] + mask[s, i] * delta[s, o, i]) (+ bias[o]).
extern "C" __global__ void per_sample_delta_cols(float* __restrict__ out, const float* __restrict__ X,
                                                 const float* __restrict__ W, const float* __restrict__ delta,
                                                 const float* __restrict__ mask, const float* __restrict__ bias, int S,
                                                 int T, int I, int O) {
  for (long long s = blockIdx.z; s < S; s += gridDim.z) {
    const float* __restrict__ Xs = X + s * T * I;
    const float* __restrict__ Ds = delta + s * O * I;
    const float* __restrict__ Ms = mask ? mask + s * I : nullptr;
    float* __restrict__ Os = out + s * T * O;
    tiled_gemm<true, true>(
        T, O, I,
        [=](int i, int t) { return Xs[static_cast<long long>(t) * I + i]; },
        [=](int i, int o) {
          const long long e = static_cast<long long>(o) * I + i;
          const float w = W[e];
          const float m = Ms ? Ms[i] : 1.0f;
          return m != 0.0f ? wte_fma(m, Ds[e], w) : w;
        },
        [=](int t, int o, float acc) { Os[static_cast<long long>(t) * O + o] = bias ? acc + bias[o] : acc; });
  }
}
