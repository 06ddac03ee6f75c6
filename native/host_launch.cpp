// host_launch.cpp - fiber-based host execution of CUDA kernels; see host_launch.h.
#include "host_launch.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <random>
#include <vector>

// AddressSanitizer must be told about stack switches, or it reports false positives on fiber stacks.
#if defined(__SANITIZE_ADDRESS__)
#define WTE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WTE_ASAN 1
#endif
#endif
#if defined(WTE_ASAN)
#include <sanitizer/common_interface_defs.h>
#define WTE_START_SWITCH(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define WTE_FINISH_SWITCH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define WTE_START_SWITCH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define WTE_FINISH_SWITCH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

wte_uint3 threadIdx{0, 0, 0};
wte_uint3 blockIdx{0, 0, 0};
wte_uint3 blockDim{1, 1, 1};
wte_uint3 gridDim{1, 1, 1};

namespace {

enum class State : unsigned char { Ready, AtBarrier, Done, Trapped };

struct Fiber {
  ucontext_t ctx;
  wte_uint3 tid;
  State state;
  char* stack;
  std::size_t stack_size;
  void* asan_fake_stack;  // AddressSanitizer bookkeeping only
};

// Fiber stacks: one mapping, one inaccessible guard page below every stack (stacks grow down), so
// a stack overflow faults instead of silently corrupting the neighbouring fiber's stack.
class StackPool {
 public:
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool() { release(); }

  void ensure(std::size_t count, std::size_t stack_bytes) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t stack = (stack_bytes + page - 1) / page * page;
    if (count <= count_ && stack == stack_) return;
    release();
    const std::size_t slot = stack + page;
    void* base = mmap(nullptr, slot * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("host_launch: cannot map fiber stacks");
    base_ = static_cast<char*>(base);
    for (std::size_t i = 0; i < count; ++i) mprotect(base_ + i * slot, page, PROT_NONE);
    count_ = count;
    stack_ = stack;
    page_ = page;
  }
  char* stack(std::size_t i) const { return base_ + i * (stack_ + page_) + page_; }
  std::size_t stack_size() const { return stack_; }

 private:
  void release() {
    if (base_ != nullptr) munmap(base_, (stack_ + page_) * count_);
    base_ = nullptr;
    count_ = stack_ = 0;
  }
  char* base_ = nullptr;
  std::size_t count_ = 0, stack_ = 0, page_ = 0;
};

// Launcher state. There is one: launches are serialized process-wide (launch_mutex), because the
// built-in variables and __shared__ statics are process-wide too.
struct Runner {
  ucontext_t scheduler;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  const char* trap_message = nullptr;
  std::exception_ptr error;
  bool active = false;
  StackPool stacks;
  std::vector<Fiber> fibers;
  // AddressSanitizer bookkeeping only: the scheduler's stack, as reported on entering a fiber.
  void* asan_fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  std::size_t scheduler_stack_size = 0;
};
Runner t_run;
std::mutex launch_mutex;
thread_local bool t_launching = false;  // this OS thread is inside launch() (nested-launch check)

void fiber_main() {
  Runner& run = t_run;
  WTE_FINISH_SWITCH(nullptr, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
  try {
    (*run.body)();
    run.current->state = State::Done;
  } catch (...) {
    // A C++ exception escaping the body: hand it to launch() instead of unwinding off the fiber.
    run.error = std::current_exception();
    run.current->state = State::Trapped;
  }
  // Returning resumes uc_link, i.e. the scheduler; this fiber's stack is finished.
  WTE_START_SWITCH(nullptr, run.scheduler_stack_bottom, run.scheduler_stack_size);
}

// Suspends the running fiber and resumes the scheduler (the fiber continues when resumed).
void yield_to_scheduler(Runner& run, Fiber* self) {
  WTE_START_SWITCH(&self->asan_fake_stack, run.scheduler_stack_bottom, run.scheduler_stack_size);
  swapcontext(&self->ctx, &run.scheduler);
  WTE_FINISH_SWITCH(self->asan_fake_stack, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
}

// The context calls live in these small out-of-line helpers: getcontext/swapcontext are
// "returns twice" functions, and keeping them out of launch() keeps its locals ordinary.
__attribute__((noinline)) void init_fiber(Runner& run, Fiber& f, std::size_t i) {
  f.state = State::Ready;
  f.asan_fake_stack = nullptr;
  f.stack = run.stacks.stack(i);
  f.stack_size = run.stacks.stack_size();
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = f.stack_size;
  f.ctx.uc_link = &run.scheduler;
  makecontext(&f.ctx, fiber_main, 0);
}

// Runs fiber f until it reaches a barrier, returns, or traps.
__attribute__((noinline)) void resume(Runner& run, Fiber& f) {
  threadIdx = f.tid;
  run.current = &f;
  WTE_START_SWITCH(&run.asan_fake_stack, f.stack, f.stack_size);
  swapcontext(&run.scheduler, &f.ctx);
  WTE_FINISH_SWITCH(run.asan_fake_stack, nullptr, nullptr);
  run.current = nullptr;
}

}  // namespace

void __syncthreads() {
  Runner& run = t_run;
  if (run.current == nullptr) return;  // called outside a launch: a single thread, nothing to wait for
  Fiber* self = run.current;
  self->state = State::AtBarrier;
  yield_to_scheduler(run, self);
}

void wte_host_trap(const char* msg) {
  Runner& run = t_run;
  if (run.current == nullptr) throw wte::host::KernelTrap(msg ? msg : "trap");
  run.trap_message = msg;
  run.current->state = State::Trapped;
  yield_to_scheduler(run, run.current);  // never resumed
  __builtin_unreachable();
}

namespace wte::host {

void check_launch_config(dim3 grid, dim3 block) {
  auto fail = [&](const std::string& why) {
    throw LaunchConfigError("invalid launch configuration grid=(" + std::to_string(grid.x) + "," +
                            std::to_string(grid.y) + "," + std::to_string(grid.z) + ") block=(" +
                            std::to_string(block.x) + "," + std::to_string(block.y) + "," +
                            std::to_string(block.z) + "): " + why);
  };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail("zero grid dimension");
  if (block.x == 0 || block.y == 0 || block.z == 0) fail("zero block dimension");
  if (grid.x > 2147483647u) fail("gridDim.x > 2^31-1");
  if (grid.y > 65535u || grid.z > 65535u) fail("gridDim.y/z > 65535");
  if (block.x > 1024u || block.y > 1024u) fail("blockDim.x/y > 1024");
  if (block.z > 64u) fail("blockDim.z > 64");
  if (static_cast<std::uint64_t>(block.x) * block.y * block.z > 1024u) fail("more than 1024 threads per block");
}

LaunchStats launch(dim3 grid, dim3 block, const std::function<void()>& body, const LaunchOptions& options) {
  check_launch_config(grid, block);
  if (t_launching) throw LaunchConfigError("host_launch: nested launch from inside a kernel");
  std::lock_guard<std::mutex> lock(launch_mutex);
  Runner& run = t_run;

  struct Active {
    Runner& r;
    explicit Active(Runner& rr) : r(rr) {
      r.active = true;
      t_launching = true;
    }
    ~Active() {
      t_launching = false;
      r.active = false;
      r.current = nullptr;
      r.body = nullptr;
      r.trap_message = nullptr;
      r.error = nullptr;
    }
  } active(run);

  const std::size_t n = static_cast<std::size_t>(block.x) * block.y * block.z;
  run.stacks.ensure(n, options.stack_bytes);
  run.fibers.resize(n);
  run.body = &body;

  blockDim = {block.x, block.y, block.z};
  gridDim = {grid.x, grid.y, grid.z};

  std::vector<std::uint32_t> order(n);
  LaunchStats stats;

  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        std::mt19937_64 rng(options.seed * 0x9E3779B97F4A7C15ull + (bx + 65536ull * (by + 65536ull * bz)));

        for (std::size_t i = 0; i < n; ++i) {
          Fiber& f = run.fibers[i];
          f.tid = {static_cast<unsigned>(i % block.x), static_cast<unsigned>((i / block.x) % block.y),
                   static_cast<unsigned>(i / (static_cast<std::size_t>(block.x) * block.y))};
          init_fiber(run, f, i);
        }

        for (;;) {
          std::iota(order.begin(), order.end(), 0u);
          if (options.order == Order::Reverse) std::reverse(order.begin(), order.end());
          if (options.order == Order::Shuffle) std::shuffle(order.begin(), order.end(), rng);

          for (std::uint32_t i : order) {
            Fiber& f = run.fibers[i];
            if (f.state != State::Ready) continue;
            resume(run, f);
            if (f.state == State::Trapped) {
              if (run.error) std::rethrow_exception(run.error);
              throw KernelTrap(std::string("kernel trapped in block (") + std::to_string(bx) + "," +
                               std::to_string(by) + "," + std::to_string(bz) + ") thread (" +
                               std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," +
                               std::to_string(f.tid.z) + "): " + (run.trap_message ? run.trap_message : "trap"));
            }
          }

          std::size_t waiting = 0, done = 0;
          for (const Fiber& f : run.fibers) {
            if (f.state == State::AtBarrier) ++waiting;
            else if (f.state == State::Done) ++done;
          }
          if (waiting == 0) break;  // every thread returned
          if (done != 0)
            throw BarrierDivergence("__syncthreads() reached by " + std::to_string(waiting) + " of " +
                                    std::to_string(n) + " threads of block (" + std::to_string(bx) + "," +
                                    std::to_string(by) + "," + std::to_string(bz) + "); the others returned");
          for (Fiber& f : run.fibers) f.state = State::Ready;
          ++stats.barrier_phases;
        }
        ++stats.blocks;
        stats.threads += n;
      }
  return stats;
}

}  // namespace wte::host
