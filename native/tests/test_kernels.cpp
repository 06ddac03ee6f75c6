// Logic tests of the edit kernels (native/wte_kernels.cu), run through the host shim/launcher and
// compared with plain, naive C++ references:
//   * exact (bit-for-bit) against a float reference that performs the same IEEE operations in the
//     same order (what the GPU computes too: the build forbids FMA contraction),
//   * within a rounding-error bound against a double-precision reference,
//   * nothing outside the selection is written (bit-identical parameters / optimizer state, guard
//     zones around outputs, inputs unchanged) and masked-out data is never read (it holds NaN).
// Shapes cover the edges: K = 0, K = 1, K = H (all neurons), first/last neuron, T not a multiple of
// the tile, T = 0, 1-element matrices, several launch shapes and fiber resume orders.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "host_launch.h"
#include "wte_kernels.h"

using wte::host::launch;
using wte::host::LaunchOptions;
using wte::host::Order;

namespace {

// ------------------------------------------------------------------------------------------ helpers

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
// A distinctive NaN payload for guard zones (a store of any computed value would change it).
float guard_value() {
  const std::uint32_t u = 0x7fc0beefu;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<float> random_floats(std::mt19937& rng, std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

enum class Pick { None, One, First, Last, All, Half, Sparse };
const Pick kPicks[] = {Pick::None, Pick::One, Pick::First, Pick::Last, Pick::All, Pick::Half, Pick::Sparse};

const char* pick_name(Pick p) {
  switch (p) {
    case Pick::None: return "K=0";
    case Pick::One: return "K=1(random)";
    case Pick::First: return "K=1(first)";
    case Pick::Last: return "K=1(last)";
    case Pick::All: return "K=all";
    case Pick::Half: return "K=half";
    case Pick::Sparse: return "K=sparse";
  }
  return "?";
}

// A sorted, distinct index list over [0, n).
std::vector<int> pick_indices(std::mt19937& rng, int n, Pick pick) {
  std::vector<int> all(n);
  for (int i = 0; i < n; ++i) all[i] = i;
  switch (pick) {
    case Pick::None: return {};
    case Pick::First: return n ? std::vector<int>{0} : std::vector<int>{};
    case Pick::Last: return n ? std::vector<int>{n - 1} : std::vector<int>{};
    case Pick::All: return all;
    case Pick::One:
    case Pick::Half:
    case Pick::Sparse: {
      std::shuffle(all.begin(), all.end(), rng);
      const int k = pick == Pick::One ? std::min(n, 1) : pick == Pick::Half ? n / 2 : std::max(std::min(n, 1), n / 7);
      std::vector<int> idx(all.begin(), all.begin() + k);
      std::sort(idx.begin(), idx.end());
      return idx;
    }
  }
  return {};
}

unsigned div_up(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }
unsigned clamp_grid(long long n, unsigned limit) {
  return static_cast<unsigned>(std::max<long long>(1, std::min<long long>(n, limit)));
}

// Launch shapes as documented in README.md (the C# side uses the same formulas).
struct Shape {
  dim3 grid, block;
  std::string name;
};

Shape recommended_rows_shape(int K, int cols) {
  return {dim3(clamp_grid(div_up(cols, 256), 65535), clamp_grid(K, 65535)), dim3(256), "recommended"};
}
Shape recommended_cols_shape(int K, int rows) {
  return {dim3(clamp_grid(div_up(K, 32), 65535), clamp_grid(div_up(rows, 8), 65535)), dim3(32, 8), "recommended"};
}
Shape recommended_tile_shape(long long M, long long N, unsigned z = 1) {
  return {dim3(clamp_grid(div_up(N, WTE_TILE), 2147483647u), clamp_grid(div_up(M, WTE_TILE), 65535), z),
          dim3(WTE_TILE_THREADS, WTE_TILE_THREADS), "recommended"};
}

// Elementwise kernels: every shape is valid (grid-strided); try odd ones too.
std::vector<Shape> elementwise_shapes(const Shape& recommended) {
  return {recommended, {dim3(1), dim3(32), "1x32"}, {dim3(2, 5), dim3(7, 3), "grid2x5/block7x3"}, {dim3(3, 1), dim3(1, 4), "grid3x1/block1x4"}};
}

// ------------------------------------------------------------------------------------------ optimizers

enum class Axis { Rows, Cols };
enum class Opt { RmsProp, Sgd };

struct OptCase {
  Opt opt;
  Axis axis;
  bool compact;
};

struct Hyper {
  float lr = 0.01f, alpha = 0.99f, one_minus_alpha = static_cast<float>(1.0 - 0.99), eps = 1e-8f, wd = 0.0f;
};

// Reference step in plain C++ (torch semantics, same IEEE operations in the same order).
void ref_rmsprop(float& p, float& v, float g, const Hyper& h) {
  if (h.wd != 0.0f) g = g + h.wd * p;
  const float a = h.alpha * v;
  const float b = h.one_minus_alpha * g;
  v = a + b * g;
  const float s = std::sqrt(v);
  const float denom = s + h.eps;
  const float num = h.lr * g;
  p = p - num / denom;
}
void ref_sgd(float& p, float g, const Hyper& h) {
  if (h.wd != 0.0f) g = g + h.wd * p;
  const float step = h.lr * g;
  p = p - step;
}
// Double-precision version for a sanity bound.
void ref_rmsprop_double(double& p, double& v, double g, const Hyper& h) {
  if (h.wd != 0.0f) g += static_cast<double>(h.wd) * p;
  v = static_cast<double>(h.alpha) * v + static_cast<double>(h.one_minus_alpha) * g * g;
  p -= static_cast<double>(h.lr) * g / (std::sqrt(v) + h.eps);
}

void run_opt(const OptCase& c, const Shape& s, float* p, float* v, const float* g, const int* idx, int K, int rows,
             int cols, const Hyper& h, const LaunchOptions& o = {}) {
  launch(s.grid, s.block,
         [&] {
           if (c.opt == Opt::RmsProp) {
             if (c.axis == Axis::Rows && !c.compact)
               masked_rmsprop_rows(p, v, g, idx, K, rows, cols, h.lr, h.alpha, h.one_minus_alpha, h.eps, h.wd);
             if (c.axis == Axis::Cols && !c.compact)
               masked_rmsprop_cols(p, v, g, idx, K, rows, cols, h.lr, h.alpha, h.one_minus_alpha, h.eps, h.wd);
             if (c.axis == Axis::Rows && c.compact)
               masked_rmsprop_rows_compact(p, v, g, idx, K, rows, cols, h.lr, h.alpha, h.one_minus_alpha, h.eps, h.wd);
             if (c.axis == Axis::Cols && c.compact)
               masked_rmsprop_cols_compact(p, v, g, idx, K, rows, cols, h.lr, h.alpha, h.one_minus_alpha, h.eps, h.wd);
           } else {
             if (c.axis == Axis::Rows && !c.compact) masked_sgd_rows(p, g, idx, K, rows, cols, h.lr, h.wd);
             if (c.axis == Axis::Cols && !c.compact) masked_sgd_cols(p, g, idx, K, rows, cols, h.lr, h.wd);
             if (c.axis == Axis::Rows && c.compact) masked_sgd_rows_compact(p, g, idx, K, rows, cols, h.lr, h.wd);
             if (c.axis == Axis::Cols && c.compact) masked_sgd_cols_compact(p, g, idx, K, rows, cols, h.lr, h.wd);
           }
         },
         o);
}

void PrintTo(const OptCase& c, std::ostream* os) {
  *os << (c.opt == Opt::RmsProp ? "rmsprop" : "sgd") << (c.axis == Axis::Rows ? " rows" : " cols")
      << (c.compact ? " compact" : " full");
}

void check_optimizer(const OptCase& c, int rows, int cols, Pick pick, float wd, std::mt19937& rng) {
  const int n_sel = c.axis == Axis::Rows ? rows : cols;
  const std::vector<int> idx = pick_indices(rng, n_sel, pick);
  const int K = static_cast<int>(idx.size());
  std::vector<char> selected(n_sel, 0);
  for (int i : idx) selected[i] = 1;
  auto is_sel = [&](int r, int col) { return selected[c.axis == Axis::Rows ? r : col] != 0; };
  // position of row/col in idx (for compact gradients)
  std::vector<int> slot(n_sel, -1);
  for (int k = 0; k < K; ++k) slot[idx[k]] = k;

  Hyper h;
  h.wd = wd;
  const std::vector<float> p0 = random_floats(rng, static_cast<std::size_t>(rows) * cols);
  const std::vector<float> v0 = random_floats(rng, p0.size(), 0.0f, 0.5f);
  std::vector<float> g = random_floats(rng, c.compact ? static_cast<std::size_t>(c.axis == Axis::Rows ? K * cols : rows * K)
                                                      : p0.size());
  if (!c.compact)  // masked-out gradient entries must never be read
    for (int r = 0; r < rows; ++r)
      for (int col = 0; col < cols; ++col)
        if (!is_sel(r, col)) g[static_cast<std::size_t>(r) * cols + col] = kNaN;
  const std::vector<float> g0 = g;
  auto grad_at = [&](int r, int col) {
    if (!c.compact) return g[static_cast<std::size_t>(r) * cols + col];
    return c.axis == Axis::Rows ? g[static_cast<std::size_t>(slot[r]) * cols + col]
                                : g[static_cast<std::size_t>(r) * K + slot[col]];
  };

  // references
  std::vector<float> p_ref = p0, v_ref = v0;
  std::vector<double> p_dbl(p0.begin(), p0.end()), v_dbl(v0.begin(), v0.end());
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < cols; ++col) {
      if (!is_sel(r, col)) continue;
      const std::size_t e = static_cast<std::size_t>(r) * cols + col;
      if (c.opt == Opt::RmsProp) {
        ref_rmsprop(p_ref[e], v_ref[e], grad_at(r, col), h);
        ref_rmsprop_double(p_dbl[e], v_dbl[e], grad_at(r, col), h);
      } else {
        ref_sgd(p_ref[e], grad_at(r, col), h);
        double gd = grad_at(r, col);
        if (wd != 0.0f) gd += static_cast<double>(wd) * p_dbl[e];
        p_dbl[e] -= static_cast<double>(h.lr) * gd;
      }
    }

  const Shape rec = c.axis == Axis::Rows ? recommended_rows_shape(K, cols) : recommended_cols_shape(K, rows);
  int shape_no = 0;
  for (const Shape& s : elementwise_shapes(rec)) {
    SCOPED_TRACE("launch " + s.name);
    std::vector<float> p = p0, v = v0;
    LaunchOptions o;
    o.order = shape_no++ % 2 ? Order::Reverse : Order::Shuffle;
    run_opt(c, s, p.data(), v.data(), g.data(), idx.data(), K, rows, cols, h, o);

    int bad = 0;
    for (int r = 0; r < rows && bad < 5; ++r)
      for (int col = 0; col < cols && bad < 5; ++col) {
        const std::size_t e = static_cast<std::size_t>(r) * cols + col;
        if (!is_sel(r, col)) {
          // never written: bit-identical parameter and optimizer state
          if (bits(p[e]) != bits(p0[e]) || bits(v[e]) != bits(v0[e])) {
            ++bad;
            ADD_FAILURE() << "unselected element (" << r << "," << col << ") changed";
          }
          continue;
        }
        if (bits(p[e]) != bits(p_ref[e])) {
          ++bad;
          ADD_FAILURE() << "p(" << r << "," << col << ") = " << p[e] << " want " << p_ref[e];
        }
        if (c.opt == Opt::RmsProp && bits(v[e]) != bits(v_ref[e])) {
          ++bad;
          ADD_FAILURE() << "v(" << r << "," << col << ") = " << v[e] << " want " << v_ref[e];
        }
        if (c.opt == Opt::Sgd && bits(v[e]) != bits(v0[e])) {
          ++bad;
          ADD_FAILURE() << "SGD touched v";
        }
        const double tol = 1e-6 * std::fabs(p_dbl[e]) + 1e-7;
        if (std::fabs(p[e] - p_dbl[e]) > tol) {
          ++bad;
          ADD_FAILURE() << "p(" << r << "," << col << ") = " << p[e] << " vs double " << p_dbl[e];
        }
      }
    for (std::size_t i = 0; i < g.size(); ++i)
      ASSERT_EQ(bits(g[i]), bits(g0[i])) << "gradient (input) modified";
  }
}

// ------------------------------------------------------------------------------------------ gather-GEMMs

// Output buffer with guard zones on both sides.
struct Guarded {
  static constexpr std::size_t kGuard = 67;
  std::vector<float> buf;
  explicit Guarded(const std::vector<float>& init) : buf(init.size() + 2 * kGuard, guard_value()) {
    std::copy(init.begin(), init.end(), buf.begin() + kGuard);
  }
  float* data() { return buf.data() + kGuard; }
  float at(std::size_t i) const { return buf[kGuard + i]; }
  std::size_t size() const { return buf.size() - 2 * kGuard; }
  bool guards_intact() const {
    const std::uint32_t gv = bits(guard_value());
    for (std::size_t i = 0; i < kGuard; ++i)
      if (bits(buf[i]) != gv || bits(buf[buf.size() - 1 - i]) != gv) return false;
    return true;
  }
};

enum class Grad { W1Rows, W2Cols };

void PrintTo(Grad g, std::ostream* os) { *os << (g == Grad::W1Rows ? "dw1_rows_gather" : "dw2_cols_gather"); }
void PrintTo(Axis a, std::ostream* os) { *os << (a == Axis::Rows ? "rows" : "cols"); }

struct GemmCase {
  int T, D, H;
  Pick pick;
};

void check_gather_gemm(Grad which, const GemmCase& gc, bool accumulate, std::mt19937& rng, bool all_shapes) {
  const int T = gc.T, D = gc.D, H = gc.H;
  const std::vector<int> idx = pick_indices(rng, H, gc.pick);
  const int K = static_cast<int>(idx.size());
  SCOPED_TRACE(std::string(which == Grad::W1Rows ? "dw1_rows_gather" : "dw2_cols_gather") + " T=" + std::to_string(T) +
               " D=" + std::to_string(D) + " H=" + std::to_string(H) + " " + pick_name(gc.pick) + " K=" +
               std::to_string(K) + (accumulate ? " accumulate" : ""));

  // Operands: P [T, H] is gathered (dH or A), Q [T, D] is dense (X or dY). Unselected columns of P
  // hold NaN: they must never be read.
  std::vector<float> P = random_floats(rng, static_cast<std::size_t>(T) * H);
  const std::vector<float> Q = random_floats(rng, static_cast<std::size_t>(T) * D);
  std::vector<char> sel(H, 0);
  for (int i : idx) sel[i] = 1;
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < H; ++j)
      if (!sel[j]) P[static_cast<std::size_t>(t) * H + j] = kNaN;
  const std::vector<float> P0 = P, Q0 = Q;

  // out element (k, d) lives at k*D + d (dw1, [K, D]) or d*K + k (dw2, [D, K])
  auto pos = [&](int k, int d) {
    return which == Grad::W1Rows ? static_cast<std::size_t>(k) * D + d : static_cast<std::size_t>(d) * K + k;
  };
  const std::vector<float> init = random_floats(rng, static_cast<std::size_t>(K) * D);
  std::vector<float> exact(init.size());
  std::vector<double> dbl(init.size()), bound(init.size());
  for (int k = 0; k < K; ++k)
    for (int d = 0; d < D; ++d) {
      float acc = 0.0f;  // same operation sequence as the kernel: fma chain over t ascending
      double sum = 0.0, mag = 0.0;
      for (int t = 0; t < T; ++t) {
        const float a = P[static_cast<std::size_t>(t) * H + idx[k]];
        const float b = Q[static_cast<std::size_t>(t) * D + d];
        acc = std::fma(a, b, acc);
        sum += static_cast<double>(a) * b;
        mag += std::fabs(static_cast<double>(a) * b);
      }
      const std::size_t e = pos(k, d);
      exact[e] = accumulate ? init[e] + acc : acc;
      dbl[e] = accumulate ? init[e] + sum : sum;
      bound[e] = (T + 2) * 1.2e-7 * (mag + (accumulate ? std::fabs(init[e]) : 0.0)) + 1e-30;
    }

  // M x N tiles: dw1: M = K (grid.y), N = D (grid.x); dw2: M = D, N = K.
  const long long M = which == Grad::W1Rows ? K : D, N = which == Grad::W1Rows ? D : K;
  std::vector<Shape> shapes = {recommended_tile_shape(M, N)};
  if (all_shapes) {
    shapes.push_back({dim3(1, 1), dim3(16, 16), "grid1x1(strided tiles)"});
    shapes.push_back({dim3(2, 3), dim3(16, 16), "grid2x3"});
  }
  const Order orders[] = {Order::Shuffle, Order::Reverse, Order::Forward};
  int shape_no = 0;
  for (const Shape& s : shapes) {
    SCOPED_TRACE("launch " + s.name);
    Guarded out(init);
    LaunchOptions o;
    o.order = orders[shape_no++ % 3];
    launch(s.grid, s.block, [&] {
      if (which == Grad::W1Rows)
        dw1_rows_gather(out.data(), P.data(), Q.data(), idx.data(), T, D, H, K, accumulate ? 1 : 0);
      else
        dw2_cols_gather(out.data(), Q.data(), P.data(), idx.data(), T, D, H, K, accumulate ? 1 : 0);
    }, o);
    ASSERT_TRUE(out.guards_intact()) << "write outside the output";
    int bad = 0;
    for (std::size_t e = 0; e < exact.size() && bad < 5; ++e) {
      if (!(out.at(e) == exact[e])) {
        ++bad;
        ADD_FAILURE() << "out[" << e << "] = " << out.at(e) << " want (fma-sequential) " << exact[e];
      }
      if (std::fabs(out.at(e) - dbl[e]) > bound[e]) {
        ++bad;
        ADD_FAILURE() << "out[" << e << "] = " << out.at(e) << " vs double " << dbl[e] << " bound " << bound[e];
      }
    }
    for (std::size_t i = 0; i < P.size(); ++i) ASSERT_EQ(bits(P[i]), bits(P0[i]));
    for (std::size_t i = 0; i < Q.size(); ++i) ASSERT_EQ(bits(Q[i]), bits(Q0[i]));
  }
}

const GemmCase kGemmCases[] = {
    {0, 5, 9, Pick::Half},     {1, 1, 1, Pick::All},     {1, 1, 1, Pick::None},    {3, 7, 11, Pick::None},
    {17, 3, 70, Pick::Sparse}, {16, 64, 64, Pick::All},  {15, 65, 64, Pick::Half}, {65, 63, 150, Pick::Sparse},
    {64, 64, 64, Pick::Last},  {130, 33, 129, Pick::All}, {33, 129, 20, Pick::First}, {70, 100, 130, Pick::Half},
    {200, 20, 90, Pick::One},
};

// ------------------------------------------------------------------------------------------ per-sample delta

enum class MaskKind { Null, Binary, Real };

struct PsCase {
  int S, T, I, O;
  MaskKind mask;
  bool bias;
};

void check_per_sample(Axis axis, const PsCase& pc, std::mt19937& rng, bool all_shapes) {
  const int S = pc.S, T = pc.T, I = pc.I, O = pc.O;
  SCOPED_TRACE(std::string(axis == Axis::Rows ? "per_sample_delta_rows" : "per_sample_delta_cols") + " S=" +
               std::to_string(S) + " T=" + std::to_string(T) + " I=" + std::to_string(I) + " O=" + std::to_string(O) +
               " mask=" + std::to_string(static_cast<int>(pc.mask)) + " bias=" + std::to_string(pc.bias));
  const int mlen = axis == Axis::Rows ? O : I;
  const std::vector<float> X = random_floats(rng, static_cast<std::size_t>(S) * T * I);
  const std::vector<float> W = random_floats(rng, static_cast<std::size_t>(O) * I);
  std::vector<float> Dl = random_floats(rng, static_cast<std::size_t>(S) * O * I, -0.5f, 0.5f);
  std::vector<float> mask;
  if (pc.mask != MaskKind::Null) {
    mask.resize(static_cast<std::size_t>(S) * mlen);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (float& m : mask) {
      const float r = u(rng);
      m = pc.mask == MaskKind::Binary ? (r < 0.4f ? 1.0f : 0.0f) : (r < 0.3f ? 0.0f : 2.0f * r - 0.7f);
    }
    // where the mask is 0 the delta must not be read
    for (int s = 0; s < S; ++s)
      for (int o = 0; o < O; ++o)
        for (int i = 0; i < I; ++i)
          if (mask[static_cast<std::size_t>(s) * mlen + (axis == Axis::Rows ? o : i)] == 0.0f)
            Dl[(static_cast<std::size_t>(s) * O + o) * I + i] = kNaN;
  }
  const std::vector<float> bias = pc.bias ? random_floats(rng, O) : std::vector<float>{};
  const std::vector<float> X0 = X, W0 = W, D0 = Dl;

  const std::size_t n_out = static_cast<std::size_t>(S) * T * O;
  std::vector<float> exact(n_out);
  std::vector<double> dbl(n_out), bound(n_out);
  for (int s = 0; s < S; ++s)
    for (int t = 0; t < T; ++t)
      for (int o = 0; o < O; ++o) {
        float acc = 0.0f;
        double base = 0.0, delta_term = 0.0, mag = 0.0;
        for (int i = 0; i < I; ++i) {
          const float x = X[(static_cast<std::size_t>(s) * T + t) * I + i];
          const float w = W[static_cast<std::size_t>(o) * I + i];
          const float dl = Dl[(static_cast<std::size_t>(s) * O + o) * I + i];
          const float m = mask.empty() ? 1.0f : mask[static_cast<std::size_t>(s) * mlen + (axis == Axis::Rows ? o : i)];
          const float weff = m != 0.0f ? std::fma(m, dl, w) : w;
          acc = std::fma(x, weff, acc);
          // out = X W^T + X (m * Delta)^T, literally
          base += static_cast<double>(x) * w;
          if (m != 0.0f) delta_term += static_cast<double>(x) * (static_cast<double>(m) * dl);
          mag += std::fabs(static_cast<double>(x)) * (std::fabs(w) + (m != 0.0f ? std::fabs(static_cast<double>(m) * dl) : 0.0));
        }
        const std::size_t e = (static_cast<std::size_t>(s) * T + t) * O + o;
        exact[e] = pc.bias ? acc + bias[o] : acc;
        dbl[e] = base + delta_term + (pc.bias ? bias[o] : 0.0);
        bound[e] = (I + 3) * 1.2e-7 * (mag + (pc.bias ? std::fabs(bias[o]) : 0.0)) + 1e-30;
      }

  std::vector<Shape> shapes = {recommended_tile_shape(T, O, clamp_grid(S, 65535))};
  if (all_shapes) {
    shapes.push_back({dim3(1, 1, 1), dim3(16, 16), "grid1x1x1(strided tiles and samples)"});
    shapes.push_back({dim3(2, 1, 2), dim3(16, 16), "grid2x1x2"});
  }
  const Order orders[] = {Order::Reverse, Order::Shuffle, Order::Forward};
  int shape_no = 0;
  for (const Shape& sh : shapes) {
    SCOPED_TRACE("launch " + sh.name);
    Guarded out(std::vector<float>(n_out, 12345.0f));
    LaunchOptions o;
    o.order = orders[shape_no++ % 3];
    launch(sh.grid, sh.block, [&] {
      const float* mp = mask.empty() ? nullptr : mask.data();
      const float* bp = pc.bias ? bias.data() : nullptr;
      if (axis == Axis::Rows)
        per_sample_delta_rows(out.data(), X.data(), W.data(), Dl.data(), mp, bp, S, T, I, O);
      else
        per_sample_delta_cols(out.data(), X.data(), W.data(), Dl.data(), mp, bp, S, T, I, O);
    }, o);
    ASSERT_TRUE(out.guards_intact()) << "write outside the output";
    int bad = 0;
    for (std::size_t e = 0; e < n_out && bad < 5; ++e) {
      if (!(out.at(e) == exact[e])) {
        ++bad;
        ADD_FAILURE() << "out[" << e << "] = " << out.at(e) << " want (fma-sequential) " << exact[e];
      }
      if (std::fabs(out.at(e) - dbl[e]) > bound[e]) {
        ++bad;
        ADD_FAILURE() << "out[" << e << "] = " << out.at(e) << " vs double " << dbl[e] << " bound " << bound[e];
      }
    }
    for (std::size_t i = 0; i < X.size(); ++i) ASSERT_EQ(bits(X[i]), bits(X0[i]));
    for (std::size_t i = 0; i < W.size(); ++i) ASSERT_EQ(bits(W[i]), bits(W0[i]));
    for (std::size_t i = 0; i < Dl.size(); ++i) ASSERT_EQ(bits(Dl[i]), bits(D0[i]));
  }
}

const PsCase kPsCases[] = {
    {1, 1, 1, 1, MaskKind::Null, false},     {1, 1, 1, 1, MaskKind::Binary, true},
    {2, 17, 33, 65, MaskKind::Binary, true}, {3, 64, 64, 64, MaskKind::Real, false},
    {2, 70, 100, 30, MaskKind::Null, true},  {1, 65, 16, 129, MaskKind::Binary, false},
    {4, 5, 130, 7, MaskKind::Real, true},    {1, 0, 5, 5, MaskKind::Binary, true},
    {0, 3, 5, 5, MaskKind::Null, false},
};

}  // namespace

// ================================================================================================ tests

class OptimizerTest : public ::testing::TestWithParam<OptCase> {};

TEST_P(OptimizerTest, MatchesReferenceAndTouchesOnlyTheSelection) {
  const OptCase c = GetParam();
  std::mt19937 rng(1234u + static_cast<unsigned>(c.opt) * 100 + static_cast<unsigned>(c.axis) * 10 + c.compact);
  const int shapes[][2] = {{1, 1}, {5, 7}, {37, 130}, {130, 37}, {64, 300}};
  for (const auto& rc : shapes)
    for (Pick pick : kPicks)
      for (float wd : {0.0f, 0.05f}) {
        SCOPED_TRACE("rows=" + std::to_string(rc[0]) + " cols=" + std::to_string(rc[1]) + " " + pick_name(pick) +
                     " wd=" + std::to_string(wd));
        check_optimizer(c, rc[0], rc[1], pick, wd, rng);
      }
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, OptimizerTest,
    ::testing::Values(OptCase{Opt::RmsProp, Axis::Rows, false}, OptCase{Opt::RmsProp, Axis::Cols, false},
                      OptCase{Opt::RmsProp, Axis::Rows, true}, OptCase{Opt::RmsProp, Axis::Cols, true},
                      OptCase{Opt::Sgd, Axis::Rows, false}, OptCase{Opt::Sgd, Axis::Cols, false},
                      OptCase{Opt::Sgd, Axis::Rows, true}, OptCase{Opt::Sgd, Axis::Cols, true}),
    [](const ::testing::TestParamInfo<OptCase>& info) {
      return std::string(info.param.opt == Opt::RmsProp ? "masked_rmsprop_" : "masked_sgd_") +
             (info.param.axis == Axis::Rows ? "rows" : "cols") + (info.param.compact ? "_compact" : "");
    });

TEST(Kernels, RmsPropSequenceOfStepsMatchesTorchRecurrence) {
  // Several steps in a row on one selected row: state v carries over between launches.
  std::mt19937 rng(7);
  const int rows = 6, cols = 9;
  const std::vector<int> idx = {1, 4};
  std::vector<float> p = random_floats(rng, rows * cols), v(rows * cols, 0.0f);
  std::vector<float> p_ref = p, v_ref = v;
  Hyper h;
  h.lr = 1e-3f;
  h.wd = 1e-2f;
  for (int step = 0; step < 5; ++step) {
    const std::vector<float> g = random_floats(rng, rows * cols);
    launch(dim3(1, 2), dim3(4), [&] {
      masked_rmsprop_rows(p.data(), v.data(), g.data(), idx.data(), 2, rows, cols, h.lr, h.alpha, h.one_minus_alpha,
                          h.eps, h.wd);
    });
    for (int r : idx)
      for (int c = 0; c < cols; ++c) ref_rmsprop(p_ref[r * cols + c], v_ref[r * cols + c], g[r * cols + c], h);
  }
  for (int e = 0; e < rows * cols; ++e) {
    EXPECT_EQ(bits(p[e]), bits(p_ref[e]));
    EXPECT_EQ(bits(v[e]), bits(v_ref[e]));
  }
}

TEST(Kernels, CompactGradientFromGatherGemmFeedsCompactOptimizer) {
  // The intended pipeline: dw1_rows_gather -> masked_rmsprop_rows_compact, and
  // dw2_cols_gather -> masked_sgd_cols_compact; equals the full-gradient path on the selection.
  std::mt19937 rng(99);
  const int T = 37, D = 20, H = 50;
  const std::vector<int> idx = pick_indices(rng, H, Pick::Sparse);
  const int K = static_cast<int>(idx.size());
  const std::vector<float> X = random_floats(rng, T * D), dH = random_floats(rng, T * H);
  const std::vector<float> W1 = random_floats(rng, H * D), V1 = random_floats(rng, H * D, 0.0f, 0.1f);
  std::vector<float> dW1c(K * D), dW1full(H * D, 0.0f);
  launch(recommended_tile_shape(K, D).grid, dim3(16, 16),
         [&] { dw1_rows_gather(dW1c.data(), dH.data(), X.data(), idx.data(), T, D, H, K, 0); });
  for (int k = 0; k < K; ++k)
    for (int d = 0; d < D; ++d) dW1full[idx[k] * D + d] = dW1c[k * D + d];
  Hyper h;
  std::vector<float> pa = W1, va = V1, pb = W1, vb = V1;
  const Shape s = recommended_rows_shape(K, D);
  launch(s.grid, s.block, [&] {
    masked_rmsprop_rows_compact(pa.data(), va.data(), dW1c.data(), idx.data(), K, H, D, h.lr, h.alpha,
                                h.one_minus_alpha, h.eps, h.wd);
  });
  launch(s.grid, s.block, [&] {
    masked_rmsprop_rows(pb.data(), vb.data(), dW1full.data(), idx.data(), K, H, D, h.lr, h.alpha, h.one_minus_alpha,
                        h.eps, h.wd);
  });
  for (int e = 0; e < H * D; ++e) {
    ASSERT_EQ(bits(pa[e]), bits(pb[e]));
    ASSERT_EQ(bits(va[e]), bits(vb[e]));
  }

  const std::vector<float> dY = random_floats(rng, T * D), A = random_floats(rng, T * H);
  const std::vector<float> W2 = random_floats(rng, D * H);
  std::vector<float> dW2c(D * K), dW2full(D * H, 0.0f);
  launch(recommended_tile_shape(D, K).grid, dim3(16, 16),
         [&] { dw2_cols_gather(dW2c.data(), dY.data(), A.data(), idx.data(), T, D, H, K, 0); });
  for (int d = 0; d < D; ++d)
    for (int k = 0; k < K; ++k) dW2full[d * H + idx[k]] = dW2c[d * K + k];
  std::vector<float> qa = W2, qb = W2;
  const Shape sc = recommended_cols_shape(K, D);
  launch(sc.grid, sc.block,
         [&] { masked_sgd_cols_compact(qa.data(), dW2c.data(), idx.data(), K, D, H, 0.1f, 0.01f); });
  launch(sc.grid, sc.block, [&] { masked_sgd_cols(qb.data(), dW2full.data(), idx.data(), K, D, H, 0.1f, 0.01f); });
  for (int e = 0; e < D * H; ++e) ASSERT_EQ(bits(qa[e]), bits(qb[e]));
}

class GatherGemmTest : public ::testing::TestWithParam<Grad> {};

TEST_P(GatherGemmTest, MatchesReferenceOnEdgeShapes) {
  std::mt19937 rng(GetParam() == Grad::W1Rows ? 11u : 22u);
  int n = 0;
  for (const GemmCase& gc : kGemmCases) {
    check_gather_gemm(GetParam(), gc, false, rng, /*all_shapes=*/n % 2 == 0);
    check_gather_gemm(GetParam(), gc, true, rng, /*all_shapes=*/n % 2 == 1);
    ++n;
  }
}

TEST_P(GatherGemmTest, MatchesReferenceOnRandomShapes) {
  std::mt19937 rng(GetParam() == Grad::W1Rows ? 33u : 44u);
  std::uniform_int_distribution<int> dt(0, 150), dd(1, 140), dh(1, 160), dp(0, 6), da(0, 1);
  for (int i = 0; i < 8; ++i) {
    const GemmCase gc{dt(rng), dd(rng), dh(rng), kPicks[dp(rng)]};
    check_gather_gemm(GetParam(), gc, da(rng) == 1, rng, i % 3 == 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, GatherGemmTest, ::testing::Values(Grad::W1Rows, Grad::W2Cols),
                         [](const ::testing::TestParamInfo<Grad>& info) {
                           return std::string(info.param == Grad::W1Rows ? "dw1_rows_gather" : "dw2_cols_gather");
                         });

class PerSampleTest : public ::testing::TestWithParam<Axis> {};

TEST_P(PerSampleTest, MatchesReference) {
  std::mt19937 rng(GetParam() == Axis::Rows ? 55u : 66u);
  int n = 0;
  for (const PsCase& pc : kPsCases) check_per_sample(GetParam(), pc, rng, n++ % 2 == 0);
  std::uniform_int_distribution<int> ds(1, 3), dt(1, 90), di(1, 100), dO(1, 100), dm(0, 2), db(0, 1);
  for (int i = 0; i < 5; ++i)
    check_per_sample(GetParam(), PsCase{ds(rng), dt(rng), di(rng), dO(rng), static_cast<MaskKind>(dm(rng)), db(rng) == 1},
                     rng, i == 0);
}

INSTANTIATE_TEST_SUITE_P(Kernels, PerSampleTest, ::testing::Values(Axis::Rows, Axis::Cols),
                         [](const ::testing::TestParamInfo<Axis>& info) {
                           return std::string(info.param == Axis::Rows ? "per_sample_delta_rows"
                                                                       : "per_sample_delta_cols");
                         });

TEST(Kernels, MaskedOutDeltaWithZeroMaskGivesThePlainProduct) {
  // mask all zero: out must equal X W^T computed by the same kernel with a zero delta.
  std::mt19937 rng(5);
  const int S = 2, T = 9, I = 21, O = 13;
  const std::vector<float> X = random_floats(rng, S * T * I), W = random_floats(rng, O * I);
  const std::vector<float> garbage(S * O * I, kNaN), zeros(S * O * I, 0.0f), mask0(S * O, 0.0f);
  std::vector<float> a(S * T * O), b(S * T * O);
  launch(dim3(1, 1, S), dim3(16, 16),
         [&] { per_sample_delta_rows(a.data(), X.data(), W.data(), garbage.data(), mask0.data(), nullptr, S, T, I, O); });
  launch(dim3(1, 1, S), dim3(16, 16),
         [&] { per_sample_delta_rows(b.data(), X.data(), W.data(), zeros.data(), nullptr, nullptr, S, T, I, O); });
  for (int e = 0; e < S * T * O; ++e) ASSERT_EQ(bits(a[e]), bits(b[e]));
}

TEST(Kernels, InvalidInputsTrap) {
  using wte::host::KernelTrap;
  std::vector<float> p(20, 1.0f), v(20, 0.0f), g(20, 1.0f);
  const std::vector<int> out_of_range = {1, 4}, unsorted = {2, 1}, duplicate = {1, 1}, negative = {-1};
  auto rms_rows = [&](const std::vector<int>& idx) {
    launch(dim3(1, 2), dim3(8), [&] {
      masked_rmsprop_rows(p.data(), v.data(), g.data(), idx.data(), static_cast<int>(idx.size()), 4, 5, 0.1f, 0.9f,
                          0.1f, 1e-8f, 0.0f);
    });
  };
  EXPECT_THROW(rms_rows(out_of_range), KernelTrap);
  EXPECT_THROW(rms_rows(unsorted), KernelTrap);
  EXPECT_THROW(rms_rows(duplicate), KernelTrap);
  EXPECT_THROW(rms_rows(negative), KernelTrap);
  EXPECT_THROW(launch(dim3(1, 1), dim3(8), [&] { masked_sgd_cols(p.data(), g.data(), unsorted.data(), 2, 4, 5, 0.1f, 0.0f); }),
               KernelTrap);
  EXPECT_THROW(launch(dim3(1, 1, 2), dim3(8), [&] { masked_sgd_rows(p.data(), g.data(), unsorted.data(), 0, 4, 5, 0.1f, 0.0f); }),
               KernelTrap);

  std::vector<float> X(4 * 5, 1.0f), dH(4 * 6, 1.0f), out(6 * 5);
  const std::vector<int> idx = {0, 6};
  EXPECT_THROW(launch(dim3(1, 1), dim3(16, 16),
                      [&] { dw1_rows_gather(out.data(), dH.data(), X.data(), idx.data(), 4, 5, 6, 2, 0); }),
               KernelTrap);  // gather index out of range
  const std::vector<int> ok = {0, 5};
  EXPECT_THROW(launch(dim3(1, 1), dim3(8, 8),
                      [&] { dw1_rows_gather(out.data(), dH.data(), X.data(), ok.data(), 4, 5, 6, 2, 0); }),
               KernelTrap);  // wrong block shape
  EXPECT_THROW(launch(dim3(1, 1, 2), dim3(16, 16),
                      [&] { dw2_cols_gather(out.data(), X.data(), dH.data(), ok.data(), 4, 5, 6, 2, 0); }),
               KernelTrap);  // gridDim.z must be 1
  EXPECT_NO_THROW(launch(dim3(1, 1), dim3(16, 16),
                         [&] { dw1_rows_gather(out.data(), dH.data(), X.data(), ok.data(), 4, 5, 6, 2, 0); }));
  EXPECT_EQ(out[0], 4.0f);
}
