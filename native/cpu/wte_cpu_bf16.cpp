// bf16 GEMM for the CPU backend's opt-in reduced-precision inference (--precision bf16): C = A·Bᵀ with A (activations,
// m×k fp32) and B (a weight, n×k fp32, as torch.nn.Linear stores it) rounded to bf16 and every product summed in fp32
// by AVX512_BF16's VDPBF16PS, which does two multiply-adds per fp32 lane: about twice the fp32 FMA rate here.
//
// .NET 10 has no intrinsics for AVX512_BF16, hence this small native library (libwte_cpu.so, CMake target wte_cpu).
// The engine calls it from its own worker pool (src/Engine/Backends/Cpu/Bf16Gemm.cs): it packs the weight once
// (wte_bf16_pack_b), the activations per call (wte_bf16_pack_a), then splits the panels over its threads
// (wte_bf16_gemm_panels). No threads, no allocation, no global state here.
//
// Layouts (32-bit words, each a pair of bf16: low half k = 2·kp, high half k = 2·kp + 1; k odd pads a zero):
//   packed B: panel q (columns 32q … 32q+31), then kp, then the 32 columns: word[(q·KP + kp)·32 + j]
//   packed A: tile t (rows 12t … 12t+11), then kp, then the 12 rows:        word[(t·KP + kp)·12 + r]
// Rows past m and columns past n are zero in the packs and never written to C.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

namespace {

constexpr int kNr = 32;  // columns per panel: two zmm of fp32 accumulators
constexpr int kMr = 12;  // rows per tile: 12 × 2 = 24 accumulators

// fp32 → bf16, round to nearest even; NaN stays NaN (quiet), as VCVTNEPS2BF16 does.
inline uint32_t ToBf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

inline uint32_t Pair(const float* row, int k, int kp) {
  int p = 2 * kp;
  uint32_t lo = ToBf16(row[p]);
  uint32_t hi = p + 1 < k ? ToBf16(row[p + 1]) : 0u;
  return lo | (hi << 16);
}

}  // namespace

extern "C" {

// 1 when this CPU executes AVX-512F and AVX512_BF16 (the engine checks before any other call).
int wte_cpu_bf16_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16") ? 1 : 0;
}

// Bumped whenever a signature or layout below changes; the engine refuses a library of another version.
int wte_cpu_abi_version(void) { return 1; }

long long wte_bf16_packed_b_words(int n, int k) { return (long long)((n + kNr - 1) / kNr) * ((k + 1) / 2) * kNr; }

long long wte_bf16_packed_a_words(int m, int k) { return (long long)((m + kMr - 1) / kMr) * ((k + 1) / 2) * kMr; }

// Packs panels [panel0, panel1) of B (n×k, row stride ldb) into dst (wte_bf16_packed_b_words words).
void wte_bf16_pack_b(const float* b, int ldb, int n, int k, uint32_t* dst, int panel0, int panel1) {
  const int kpairs = (k + 1) / 2;
  for (int q = panel0; q < panel1; q++) {
    uint32_t* panel = dst + (long long)q * kpairs * kNr;
    for (int j = 0; j < kNr; j++) {
      const int col = q * kNr + j;
      if (col >= n) {
        for (int kp = 0; kp < kpairs; kp++) panel[(long long)kp * kNr + j] = 0u;
        continue;
      }
      const float* row = b + (long long)col * ldb;
      for (int kp = 0; kp < kpairs; kp++) panel[(long long)kp * kNr + j] = Pair(row, k, kp);
    }
  }
}

// Packs row tiles [tile0, tile1) of A (m×k, row stride lda) into dst (wte_bf16_packed_a_words words).
void wte_bf16_pack_a(const float* a, int lda, int m, int k, uint32_t* dst, int tile0, int tile1) {
  const int kpairs = (k + 1) / 2;
  for (int t = tile0; t < tile1; t++) {
    uint32_t* tile = dst + (long long)t * kpairs * kMr;
    for (int r = 0; r < kMr; r++) {
      const int row = t * kMr + r;
      if (row >= m) {
        for (int kp = 0; kp < kpairs; kp++) tile[(long long)kp * kMr + r] = 0u;
        continue;
      }
      const float* src = a + (long long)row * lda;
      int kp = 0;
      // 32 values → 16 pairs per step: VCVTNE2PS2BF16 rounds like ToBf16 and leaves pair p in word p.
      for (; 2 * kp + 32 <= k; kp += 16) {
        __m512 lo = _mm512_loadu_ps(src + 2 * kp), hi = _mm512_loadu_ps(src + 2 * kp + 16);
        __m512i words = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        alignas(64) uint32_t w[16];
        _mm512_store_si512(w, words);
        for (int i = 0; i < 16; i++) tile[(long long)(kp + i) * kMr + r] = w[i];
      }
      for (; kp < kpairs; kp++) tile[(long long)kp * kMr + r] = Pair(src, k, kp);
    }
  }
}

// C[:, panels] = packedA · packedB for panels [panel0, panel1) and every row tile; C's row stride ldc. Each element
// is one fp32 sum over kp in increasing order, whatever the panel range, so results do not depend on the split.
void wte_bf16_gemm_panels(int m, int n, int k, const uint32_t* apack, const uint32_t* bpack, float* c, int ldc,
                          int panel0, int panel1) {
  const int kpairs = (k + 1) / 2;
  const int tiles = (m + kMr - 1) / kMr;
  for (int q = panel0; q < panel1; q++) {
    const uint32_t* bp = bpack + (long long)q * kpairs * kNr;
    const int cols = n - q * kNr < kNr ? n - q * kNr : kNr;
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : cols <= 16 ? (__mmask16)0 : (__mmask16)((1u << (cols - 16)) - 1u);
    for (int t = 0; t < tiles; t++) {
      const uint32_t* ap = apack + (long long)t * kpairs * kMr;
      __m512 acc[2 * kMr];
#pragma GCC unroll 24
      for (int i = 0; i < 2 * kMr; i++) acc[i] = _mm512_setzero_ps();
      for (int kp = 0; kp < kpairs; kp++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + (long long)kp * kNr);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + (long long)kp * kNr + 16);
        const uint32_t* ar = ap + (long long)kp * kMr;
#pragma GCC unroll 12
        for (int r = 0; r < kMr; r++) {
          const __m512bh x = (__m512bh)_mm512_set1_epi32((int)ar[r]);
          acc[2 * r] = _mm512_dpbf16_ps(acc[2 * r], x, b0);
          acc[2 * r + 1] = _mm512_dpbf16_ps(acc[2 * r + 1], x, b1);
        }
      }
      const int rows = m - t * kMr < kMr ? m - t * kMr : kMr;
      float* ct = c + (long long)t * kMr * ldc + (long long)q * kNr;
      for (int r = 0; r < rows; r++) {
        _mm512_mask_storeu_ps(ct + (long long)r * ldc, m0, acc[2 * r]);
        _mm512_mask_storeu_ps(ct + (long long)r * ldc + 16, m1, acc[2 * r + 1]);
      }
    }
  }
}

}  // extern "C"
