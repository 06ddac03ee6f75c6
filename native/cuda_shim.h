// cuda_shim.h - lets the same kernel sources compile three ways:
//
//   1. nvcc (CUDA headers are force-included by nvcc; nothing to do here),
//   2. clang -x cuda -nocudainc (no CUDA headers at all: we define the CUDA keywords as clang
//      attributes and pull in clang's own builtin-variable header),
//   3. plain host C++ (g++ / clang++): the keywords become ordinary C++ and the built-in
//      variables (threadIdx, blockIdx, blockDim, gridDim) and __syncthreads() are provided by the
//      fiber-based host launcher in host_launch.{h,cpp}.
//
// It also provides the handful of device math helpers the kernels use, with IEEE semantics on all
// three paths (no libdevice, no fast-math, no FMA contraction except where written explicitly):
//   wte_fma(a, b, c)  fused multiply-add, one rounding   (fma.rn.f32 / std::fma)
//   wte_sqrt(x)       correctly rounded square root      (sqrt.rn.f32 / std::sqrt)
//   wte_div(a, b)     correctly rounded division         (div.rn.f32 / a / b)
//   WTE_TRAP(msg)     abort the launch                   (PTX trap / host launcher error)
#pragma once

#if defined(__CUDACC__) || defined(__CUDA__)
// ------------------------------------------------------------------ CUDA compilation (both compilers)
#define WTE_CUDA 1

#if !defined(__global__)
// clang -x cuda -nocudainc: the CUDA runtime headers (which define these) are not included.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include <__clang_cuda_builtin_vars.h>
#endif

#define WTE_DEV __device__ __forceinline__

#if defined(__CUDA_ARCH__)
// Device pass. Inline PTX keeps sqrt/div IEEE whatever flags a future build uses (e.g. fast-math).
WTE_DEV float wte_sqrt(float x) {
  float r;
  asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
WTE_DEV float wte_div(float a, float b) {
  float r;
  asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
#if defined(__clang__)
WTE_DEV float wte_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
WTE_DEV float wte_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#endif
#define WTE_TRAP(msg) asm volatile("trap;")
#else
// Host pass of a CUDA compilation (never code-generated for the kernels, only parsed).
WTE_DEV float wte_sqrt(float x) { return __builtin_sqrtf(x); }
WTE_DEV float wte_div(float a, float b) { return a / b; }
WTE_DEV float wte_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#define WTE_TRAP(msg) __builtin_trap()
#endif

#else
// ------------------------------------------------------------------ plain host C++ (the shim proper)
#define WTE_HOST_EMULATION 1

#include <cmath>

// The "threads" of a block run as fibers on one OS thread and only one block of one launch is live
// at a time (launches are serialized process-wide, see host_launch.cpp), so a function-level static
// is exactly block-shared memory.
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __constant__
#define __forceinline__ inline
// __restrict__ is understood natively by g++ and clang++.

#define WTE_DEV inline

struct wte_uint3 {
  unsigned int x, y, z;
};

// CUDA's dim3 (launch-configuration type): missing components default to 1.
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Built-in variables; set by the host launcher for the fiber that is currently running. (Plain
// globals: launches are serialized. Deliberately not `extern thread_local`, whose access wrappers
// also trip a GCC+binutils false positive under -fsanitize=null.)
extern wte_uint3 threadIdx;
extern wte_uint3 blockIdx;
extern wte_uint3 blockDim;
extern wte_uint3 gridDim;

// Block-wide barrier: suspends the calling fiber until every thread of the block has reached a
// barrier. Out of line on purpose: the compiler must assume it reads and writes any memory.
void __syncthreads();

// Aborts the current launch: host::launch() throws wte::host::KernelTrap with this message.
[[noreturn]] void wte_host_trap(const char* msg);

inline float wte_sqrt(float x) { return std::sqrt(x); }
inline float wte_div(float a, float b) { return a / b; }
inline float wte_fma(float a, float b, float c) { return std::fma(a, b, c); }
#define WTE_TRAP(msg) wte_host_trap(msg)

#endif
