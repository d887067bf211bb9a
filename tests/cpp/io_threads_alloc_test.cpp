// IoThreads when host memory runs out while it starts its threads: the
// caller gets fewer threads or a bad_alloc, never an aborted process (a
// std::thread still joinable when its vector is destroyed would call
// std::terminate). Its own binary: it replaces the global operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "backup/io_threads.h"

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

}  // namespace
}  // namespace tms
