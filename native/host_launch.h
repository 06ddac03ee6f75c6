// host_launch.h - runs a CUDA kernel (compiled as host C++ through cuda_shim.h) over a grid.
//
// Blocks run one after another. Inside a block every CUDA thread is a fiber (ucontext) with its own
// stack, all on the calling OS thread. Launches are serialized process-wide (a mutex), since the
// built-in variables and __shared__ statics are process-wide. A fiber runs until it calls __syncthreads() or returns; when
// every live fiber of the block is parked at the barrier they are all released again. Registers and
// locals therefore survive barriers exactly as on a GPU, __shared__ (a function-level static) is
// shared by the block, and kernels are written in plain, unmodified CUDA style.
//
// The order in which the fibers of a block are resumed between two barriers can be forward,
// reverse or shuffled: a kernel that forgets a barrier (a shared-memory race) gives order-dependent
// results, which the tests detect by running kernels under several orders.
//
// The launcher enforces CUDA's launch-configuration limits (so a configuration that passes here is
// valid on a GPU), rejects __syncthreads() reached by only part of a block, and turns WTE_TRAP
// (device-side `trap`) into a C++ exception thrown from launch().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "cuda_shim.h"

#if !defined(WTE_HOST_EMULATION)
#error "host_launch.h is for host (non-CUDA) builds only"
#endif

namespace wte::host {

enum class Order { Forward, Reverse, Shuffle };

struct LaunchOptions {
  Order order = Order::Forward;
  std::uint64_t seed = 1;                 // for Order::Shuffle (reshuffled every barrier phase)
  std::size_t stack_bytes = 64 * 1024;    // per fiber (guard page below each stack)
};

struct LaunchStats {
  std::uint64_t blocks = 0;
  std::uint64_t threads = 0;              // thread (fiber) runs in total
  std::uint64_t barrier_phases = 0;       // block-wide barrier releases in total
};

// The launch configuration is invalid for CUDA (zero dimension, too many threads, grid too large).
struct LaunchConfigError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Some threads of a block reached a barrier that others never reached (or reached a different
// number of barriers): undefined behaviour on a GPU.
struct BarrierDivergence : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The kernel executed WTE_TRAP (on a GPU: `trap`, the launch fails with an error).
struct KernelTrap : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs `body` once per CUDA thread of the grid, with threadIdx/blockIdx/blockDim/gridDim set.
// `body` normally just calls the kernel: launch(grid, block, [&] { my_kernel(a, b, n); });
LaunchStats launch(dim3 grid, dim3 block, const std::function<void()>& body, const LaunchOptions& options = {});

// Validates a launch configuration against CUDA's limits; throws LaunchConfigError.
void check_launch_config(dim3 grid, dim3 block);

}  // namespace wte::host
