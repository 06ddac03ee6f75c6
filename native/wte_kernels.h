// wte_kernels.h - declarations of the edit hot-path kernels (native/wte_kernels.cu) and their
// launch constants. Included by the kernel source itself, so declarations and definitions cannot
// drift apart, and by the host-side tests. Layouts, launch shapes and parameter order are
// documented in native/README.md (that is the contract the C# loader follows).
//
// All matrices are fp32, row-major, dense. Index lists are int32. Sizes are int32 element counts.
#pragma once

#include "cuda_shim.h"

// Tiled kernels (gather-GEMMs and per-sample delta apply): a block computes a 64x64 output tile
// with 16x16 threads, each owning a 4x4 register block (rows ty+16i, cols tx+16j); the reduction
// dimension is staged through shared memory 16 at a time. They must be launched with exactly
// blockDim = (16, 16, 1) (anything else traps). Shared memory is static (2 * 16 * 65 floats =
// 8320 bytes); pass sharedMemBytes = 0.
#define WTE_TILE 64
#define WTE_TILE_R 16
#define WTE_TILE_THREADS 16

#ifdef __cplusplus
extern "C" {
#endif

// ---- masked RMSprop (torch.optim.RMSprop, centered=False, momentum=0) ---------------------------
// For each selected element: g = grad (+ weight_decay*p when weight_decay != 0);
//   v = alpha*v + (one_minus_alpha*g)*g;  p = p - (lr*g) / (sqrt(v) + eps)
// p, v: [rows, cols]. idx: K sorted, distinct indices (rows for *_rows, columns for *_cols).
// grad: [rows, cols] (full variants), [K, cols] (rows_compact) or [rows, K] (cols_compact).
__global__ void masked_rmsprop_rows(float* __restrict__ p, float* __restrict__ v, const float* __restrict__ grad,
                                    const int* __restrict__ idx, int K, int rows, int cols, float lr, float alpha,
                                    float one_minus_alpha, float eps, float weight_decay);
__global__ void masked_rmsprop_cols(float* __restrict__ p, float* __restrict__ v, const float* __restrict__ grad,
                                    const int* __restrict__ idx, int K, int rows, int cols, float lr, float alpha,
                                    float one_minus_alpha, float eps, float weight_decay);
__global__ void masked_rmsprop_rows_compact(float* __restrict__ p, float* __restrict__ v,
                                            const float* __restrict__ grad, const int* __restrict__ idx, int K,
                                            int rows, int cols, float lr, float alpha, float one_minus_alpha,
                                            float eps, float weight_decay);
__global__ void masked_rmsprop_cols_compact(float* __restrict__ p, float* __restrict__ v,
                                            const float* __restrict__ grad, const int* __restrict__ idx, int K,
                                            int rows, int cols, float lr, float alpha, float one_minus_alpha,
                                            float eps, float weight_decay);

// ---- masked SGD (torch.optim.SGD, momentum=0) -----------------------------------------------------
// For each selected element: d = grad (+ weight_decay*p when weight_decay != 0); p = p - lr*d.
__global__ void masked_sgd_rows(float* __restrict__ p, const float* __restrict__ grad, const int* __restrict__ idx,
                                int K, int rows, int cols, float lr, float weight_decay);
__global__ void masked_sgd_cols(float* __restrict__ p, const float* __restrict__ grad, const int* __restrict__ idx,
                                int K, int rows, int cols, float lr, float weight_decay);
__global__ void masked_sgd_rows_compact(float* __restrict__ p, const float* __restrict__ grad,
                                        const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                        float weight_decay);
__global__ void masked_sgd_cols_compact(float* __restrict__ p, const float* __restrict__ grad,
                                        const int* __restrict__ idx, int K, int rows, int cols, float lr,
                                        float weight_decay);

// ---- gather-GEMM weight gradients for the selected neurons only -------------------------------------
// dW1c[k, d] (+)= sum_t dH[t, idx[k]] * X[t, d]      dW1c [K, D], dH [T, H], X [T, D]
__global__ void dw1_rows_gather(float* __restrict__ dW1c, const float* __restrict__ dH, const float* __restrict__ X,
                                const int* __restrict__ idx, int T, int D, int H, int K, int accumulate);
// dW2c[d, k] (+)= sum_t dY[t, d] * A[t, idx[k]]      dW2c [D, K], dY [T, D], A [T, H]
__global__ void dw2_cols_gather(float* __restrict__ dW2c, const float* __restrict__ dY, const float* __restrict__ A,
                                const int* __restrict__ idx, int T, int D, int H, int K, int accumulate);

// ---- per-sample delta apply (batched meta-training) -------------------------------------------------
// out[s, t, o] = sum_i X[s, t, i] * Weff_s[o, i] (+ bias[o]),  X [S, T, I], W [O, I], delta [S, O, I],
// out [S, T, O]; Weff_s[o, i] = W[o, i] + m*delta[s, o, i] with
//   rows: m = mask[s, o] (mask [S, O]),  cols: m = mask[s, i] (mask [S, I]);
// mask == nullptr means m = 1 everywhere; where m == 0, delta is not read and Weff = W exactly.
// bias == nullptr means no bias.
__global__ void per_sample_delta_rows(float* __restrict__ out, const float* __restrict__ X,
                                      const float* __restrict__ W, const float* __restrict__ delta,
                                      const float* __restrict__ mask, const float* __restrict__ bias, int S, int T,
                                      int I, int O);
__global__ void per_sample_delta_cols(float* __restrict__ out, const float* __restrict__ X,
                                      const float* __restrict__ W, const float* __restrict__ delta,
                                      const float* __restrict__ mask, const float* __restrict__ bias, int S, int T,
                                      int I, int O);

#ifdef __cplusplus
}
#endif
