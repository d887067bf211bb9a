// Host memory running out where the library must not throw: starting I/O
// threads (a std::thread still joinable when its vector is destroyed would
// call std::terminate) and giving host backup memory back (noexcept paths
// that pool, queue or keep blocks). The caller gets fewer threads or a
// bad_alloc, never an aborted process. Its own binary: it replaces the
// global operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "backup/host_memory.h"
#include "backup/io_threads.h"
#include "driver/sim_driver.h"

namespace {
// The `g_fail_in`-th next operator new on this thread throws (0: never).
thread_local int g_fail_in = 0;
}  // namespace

// malloc and free behind new and delete, so GCC's check that they pair up
// does not apply.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (g_fail_in > 0 && --g_fail_in == 0) throw std::bad_alloc();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tms {
namespace {

TEST(IoThreadsDeathTest, RunningOutOfMemoryWhileStartingThreadsNeverAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        // Fail each allocation of the constructor in turn; whatever is built
        // must still run its tasks.
        for (int nth = 1; nth <= 24; ++nth) {
          try {
            g_fail_in = nth;
            IoThreads threads(3, 4);
            g_fail_in = 0;
            std::atomic<int> ran{0};
            for (std::size_t slot = 0; slot < 4; ++slot) threads.run(slot, [&ran] { ++ran; });
            threads.wait_all();
            if (ran != 4) std::_Exit(2);
          } catch (const std::bad_alloc&) {
            g_fail_in = 0;  // an error the caller can report
          }
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(HostMemoryDeathTest, RunningOutOfMemoryWhileGivingBackNeverAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        constexpr std::size_t kMiB = std::size_t{1} << 20;
        SimDriver sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
        for (const bool background : {false, true}) {
          HostMemoryOptions options;
          options.prepare_threads = 1;
          options.background_release = background;
          HostMemory memory(sim, options);
          memory.set_pooling(true);  // pinned blocks go to the pool
          for (int nth = 1; nth <= 16; ++nth) {
            for (const HostMemoryKind kind : {HostMemoryKind::kPinned, HostMemoryKind::kMmap}) {
              HostBuffer buffer = memory.acquire_one(kMiB, kind);
              memory.trim();
              if (nth % 2 == 0) sim.fail_call(SimCall::kHostFree, 1);  // kept for a retry
              g_fail_in = nth;
              buffer.reset();
              g_fail_in = 0;
              memory.drain();
              memory.retry_failed();
            }
          }
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace tms
