// Tests of the host launcher itself (host_launch.{h,cpp}): grid coverage, barrier semantics,
// race detection through resume orders, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "host_launch.h"

using wte::host::launch;
using wte::host::LaunchOptions;
using wte::host::Order;

namespace {

const Order kOrders[] = {Order::Forward, Order::Reverse, Order::Shuffle};

// Records every thread's coordinates.
void coords_kernel(unsigned* out) {
  const unsigned gx = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned gy = blockIdx.y * blockDim.y + threadIdx.y;
  const unsigned gz = blockIdx.z * blockDim.z + threadIdx.z;
  const unsigned nx = gridDim.x * blockDim.x, ny = gridDim.y * blockDim.y;
  out[(gz * ny + gy) * nx + gx] += 1 + gx + 1000 * gy + 1000000 * gz;
}

// Block-wide tree reduction in shared memory; each thread also keeps a private running value across
// all barriers (it must survive the fiber switches).
void reduce_kernel(const int* in, int* out, int* private_check) {
  __shared__ int s[256];
  const unsigned t = threadIdx.x;
  int mine = in[blockIdx.x * blockDim.x + t];
  s[t] = mine;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    mine += 1;  // private state carried across the barrier
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
  private_check[blockIdx.x * blockDim.x + t] = mine;
}

// Reads a neighbour's shared slot without a barrier in between: a race.
void racy_kernel(int* out) {
  __shared__ int s[64];
  const unsigned t = threadIdx.x;
  s[t] = static_cast<int>(t) + 1;
  out[t] = s[(t + 1) % blockDim.x];
}

// Same with the barrier: race-free.
void fixed_kernel(int* out) {
  __shared__ int s[64];
  const unsigned t = threadIdx.x;
  s[t] = static_cast<int>(t) + 1;
  __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

void divergent_kernel() {
  if (threadIdx.x % 2 == 0) return;
  __syncthreads();
}

void uneven_barrier_kernel() {
  __syncthreads();
  if (threadIdx.x == 3) __syncthreads();
}

void trap_kernel(int* out) {
  out[threadIdx.x] = 1;
  if (blockIdx.x == 1 && threadIdx.x == 5) WTE_TRAP("boom");
}

}  // namespace

TEST(HostLaunch, CoversEveryThreadExactlyOnce) {
  const dim3 grids[] = {dim3(1), dim3(3, 2), dim3(2, 2, 3)};
  const dim3 blocks[] = {dim3(1), dim3(7, 3), dim3(4, 2, 2), dim3(64)};
  for (const dim3& g : grids)
    for (const dim3& b : blocks)
      for (Order order : kOrders) {
        const unsigned nx = g.x * b.x, ny = g.y * b.y, nz = g.z * b.z;
        std::vector<unsigned> out(nx * ny * nz, 0);
        LaunchOptions o;
        o.order = order;
        const auto stats = launch(g, b, [&] { coords_kernel(out.data()); }, o);
        EXPECT_EQ(stats.blocks, static_cast<std::uint64_t>(g.x) * g.y * g.z);
        EXPECT_EQ(stats.threads, static_cast<std::uint64_t>(nx) * ny * nz);
        EXPECT_EQ(stats.barrier_phases, 0u);
        for (unsigned z = 0; z < nz; ++z)
          for (unsigned y = 0; y < ny; ++y)
            for (unsigned x = 0; x < nx; ++x)
              ASSERT_EQ(out[(z * ny + y) * nx + x], 1 + x + 1000 * y + 1000000 * z);
      }
}

TEST(HostLaunch, BarriersSynchronizeAndPreserveThreadState) {
  const unsigned blocks = 3, threads = 128;
  std::vector<int> in(blocks * threads);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i * 7 % 31) - 11;
  for (Order order : kOrders) {
    std::vector<int> out(blocks, -1), priv(in.size(), -1);
    LaunchOptions o;
    o.order = order;
    const auto stats = launch(dim3(blocks), dim3(threads), [&] { reduce_kernel(in.data(), out.data(), priv.data()); }, o);
    EXPECT_EQ(stats.barrier_phases, blocks * 8u);  // 1 + log2(128) barriers per block
    for (unsigned b = 0; b < blocks; ++b) {
      int sum = 0;
      for (unsigned t = 0; t < threads; ++t) sum += in[b * threads + t];
      EXPECT_EQ(out[b], sum);
      for (unsigned t = 0; t < threads; ++t) EXPECT_EQ(priv[b * threads + t], in[b * threads + t] + 7);
    }
  }
}

TEST(HostLaunch, ResumeOrdersExposeAMissingBarrier) {
  std::vector<int> fwd(64), rev(64), fixed_fwd(64), fixed_rev(64);
  LaunchOptions f, r;
  f.order = Order::Forward;
  r.order = Order::Reverse;
  launch(dim3(1), dim3(64), [&] { racy_kernel(fwd.data()); }, f);
  launch(dim3(1), dim3(64), [&] { racy_kernel(rev.data()); }, r);
  EXPECT_NE(fwd, rev) << "the racy kernel should be order-dependent";
  launch(dim3(1), dim3(64), [&] { fixed_kernel(fixed_fwd.data()); }, f);
  launch(dim3(1), dim3(64), [&] { fixed_kernel(fixed_rev.data()); }, r);
  EXPECT_EQ(fixed_fwd, fixed_rev);
  for (int t = 0; t < 64; ++t) EXPECT_EQ(fixed_fwd[t], (t + 1) % 64 + 1);
}

TEST(HostLaunch, DivergentBarrierIsAnError) {
  EXPECT_THROW(launch(dim3(1), dim3(8), [] { divergent_kernel(); }), wte::host::BarrierDivergence);
  EXPECT_THROW(launch(dim3(1), dim3(8), [] { uneven_barrier_kernel(); }), wte::host::BarrierDivergence);
}

TEST(HostLaunch, TrapThrowsAndTheLauncherStaysUsable) {
  std::vector<int> out(32, 0);
  try {
    launch(dim3(3), dim3(32), [&] { trap_kernel(out.data()); });
    FAIL() << "expected KernelTrap";
  } catch (const wte::host::KernelTrap& e) {
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("block (1,0,0) thread (5,0,0)"), std::string::npos);
  }
  std::vector<int> ok(64);
  launch(dim3(1), dim3(64), [&] { fixed_kernel(ok.data()); });
  EXPECT_EQ(ok[0], 2);
  EXPECT_THROW(wte_host_trap("outside"), wte::host::KernelTrap);
}

TEST(HostLaunch, ExceptionsFromTheBodyPropagate) {
  EXPECT_THROW(launch(dim3(2), dim3(4), [] {
                 if (threadIdx.x == 2) throw std::logic_error("x");
               }),
               std::logic_error);
  EXPECT_THROW(launch(dim3(1), dim3(1), [] { launch(dim3(1), dim3(1), [] {}); }), wte::host::LaunchConfigError);
}

TEST(HostLaunch, RejectsConfigurationsCudaRejects) {
  using wte::host::LaunchConfigError;
  auto nop = [] {};
  EXPECT_THROW(launch(dim3(0), dim3(1), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1, 0), dim3(1), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1), dim3(0), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1), dim3(1025), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1), dim3(32, 33), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1), dim3(1, 1, 65), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1, 65536), dim3(1), nop), LaunchConfigError);
  EXPECT_THROW(launch(dim3(1, 1, 65536), dim3(1), nop), LaunchConfigError);
  EXPECT_NO_THROW(wte::host::check_launch_config(dim3(2147483647u, 65535, 65535), dim3(1024)));
  EXPECT_NO_THROW(launch(dim3(1), dim3(32, 32), nop));
}
