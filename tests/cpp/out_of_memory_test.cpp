// Host memory or threads running out where the library must not throw:
// starting I/O threads (a std::thread still joinable when its vector is
// destroyed would call std::terminate), giving host backup memory back
// (noexcept paths that pool, queue or keep blocks), and threads the system
// refuses to start (the work runs on fewer threads or on the caller's). The
// caller gets fewer threads or a bad_alloc, never an aborted process. Its
// own binary: it replaces the global operator new and pthread_create.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <new>
#include <thread>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "backup/io_threads.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "driver/sim_driver.h"
#include "faulty_sim.h"
#include "preparation_test_support.h"
#include "test_support.h"

namespace {
// The `g_fail_in`-th next operator new on this thread throws (0: never).
thread_local int g_fail_in = 0;
// Threads that may still start (negative: any number); past them
// pthread_create fails with EAGAIN, as at the system's thread limit.
std::atomic<int> g_threads_left{-1};
std::atomic<int> g_threads_refused{0};
}  // namespace

// std::thread starts its threads through this (the executable's definition
// comes first in the dynamic linker's search).
extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*),
                              void* arg) noexcept {
  using Real = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static const auto real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "pthread_create"));
  int left = g_threads_left.load();
  while (left > 0 && !g_threads_left.compare_exchange_weak(left, left - 1)) {
  }
  if (left == 0) {
    ++g_threads_refused;
    return EAGAIN;
  }
  return real(thread, attr, start, arg);
}

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
        testing::FaultySim sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
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
              if (nth % 2 == 0) sim.fail_call(DriverCall::kHostFree, 1);  // kept for a retry
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

// Running out of memory while copies are handed to the threads preparing
// host memory: whatever add() handed over before the bad_alloc is stopped
// with the preparation when the copies unwind, so no copy starts after the
// streams were drained (the caller may free the memory on both sides then).
TEST(QueuedCopiesDeathTest, RunningOutOfMemoryWhileHandingCopiesOverStartsNoneAfterTheDrain) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        bool added = false;
        for (int nth = 1; !added; ++nth) {
          // Every copy is handed over: the registrations wait until the
          // streams are drained (or the opener below opens them).
          testing::GatedCopySetup setup(64 * 1024);
          std::thread opener;
          {
            QueuedCopies copies(setup.pipeline, /*to_host=*/true);
            g_fail_in = nth;
            try {
              copies.add(setup.items());
              added = true;
            } catch (const std::bad_alloc&) {
            }
            g_fail_in = 0;
            // Stopping the preparation waits for its threads, which wait in
            // a registration: let them finish it.
            opener = std::thread([&setup] {
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
              setup.driver.open();
            });
          }  // unwinds without wait()
          opener.join();
          try {
            setup.batch.wait_all();  // until whatever still runs is done
          } catch (const tms::Error&) {
          }
          if (setup.driver.copies_after_a_stream_wait() != 0) std::_Exit(3);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Running out of host memory where the engine lets go of backups: resume's
// commit, free() and discard_backup() hand each backup over through
// Backup::release_into, which is noexcept. A bad_alloc there would abort the
// process; anywhere before the commit it must leave everything paused with
// its backup (all or nothing), after it everything resumed.
TEST(EngineDeathTest, RunningOutOfMemoryWhileLettingGoOfBackupsNeverAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        using testing::kMiB;
        bool resumed = false;
        for (int nth = 1; !resumed; ++nth) {
          testing::FaultySim sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
          testing::TempDir dir;
          Engine engine(sim);
          engine.set_disk_backup_dir(dir.path());
          const DevicePtr a =
              engine.allocate(testing::request(kMiB, 0, "w", testing::host_backup()));
          const DevicePtr b =
              engine.allocate(testing::request(kMiB + 3, 0, "w", testing::disk_backup()));
          const DevicePtr c =
              engine.allocate(testing::request(kMiB, 0, "w", testing::host_backup()));
          const DevicePtr d =
              engine.allocate(testing::request(kMiB, 0, "w", testing::host_backup()));
          testing::fill_pattern(a, kMiB, 1);
          testing::fill_pattern(b, kMiB + 3, 2);
          engine.pause("w");
          engine.discard_backup(c);
          g_fail_in = nth;
          try {
            engine.resume("w");
            resumed = true;
          } catch (const std::bad_alloc&) {
          } catch (const tms::Error&) {  // bad_alloc inside a thread, reported as an error
          }
          g_fail_in = 0;
          const TagDeviceStats stats = engine.stats().entries.at(0);
          if (resumed) {
            if (stats.paused_bytes != 0) std::_Exit(3);
          } else {
            // All or nothing: still paused, every backup kept.
            if (stats.active_bytes != 0) std::_Exit(4);
            if (stats.backup_bytes < 2 * kMiB || stats.disk_backup_bytes != kMiB + 3) std::_Exit(5);
            engine.resume("w");
          }
          if (!testing::has_pattern(a, kMiB, 1) || !testing::has_pattern(b, kMiB + 3, 2))
            std::_Exit(6);
          // free() and discard_backup() of a paused allocation with a backup.
          engine.pause("w");
          g_fail_in = nth;
          try {
            engine.discard_backup(a);
          } catch (const std::bad_alloc&) {
          }
          g_fail_in = nth;
          try {
            engine.free(b);
          } catch (const std::bad_alloc&) {
          }
          g_fail_in = nth;
          try {
            engine.free(d);
          } catch (const std::bad_alloc&) {
          }
          g_fail_in = 0;
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Running out of host memory in a non-blocking resume: before its commit
// it leaves everything paused with its backups and no copy queued into the
// memory it unmapped again; after it, the restore is watched and finished
// (wait() returns, the records can be freed). Never an abort or a hang.
TEST(EngineDeathTest, RunningOutOfMemoryInANonBlockingResumeLeavesNoCopyBehindAndNoHang) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(60);  // a restore nobody watches would make wait() hang
        using testing::kMiB;
        // Until a resume runs without reaching its nth allocation: some
        // failures are absorbed (a repair or a thread start is tried later).
        bool reached = true;
        for (int nth = 1; reached; ++nth) {
          testing::FaultySim sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
          Engine engine(sim);
          const DevicePtr a =
              engine.allocate(testing::request(kMiB, 0, "w", testing::host_backup()));
          const DevicePtr b =
              engine.allocate(testing::request(kMiB + 3, 0, "w", testing::host_backup()));
          testing::fill_pattern(a, kMiB, 1);
          testing::fill_pattern(b, kMiB + 3, 2);
          engine.pause("w");
          sim.simulation().set_copies_deferred(true);
          g_fail_in = nth;
          bool threw = false;
          try {
            engine.resume("w", ResumeMode::kNonBlocking);
          } catch (const std::bad_alloc&) {
            threw = true;
          } catch (const tms::Error&) {
            threw = true;
          }
          reached = g_fail_in == 0;
          g_fail_in = 0;
          const TagDeviceStats stats = engine.stats().entries.at(0);
          if (threw && stats.active_bytes == 0) {
            // Before the commit: paused, backups kept, no copy left queued.
            if (sim.simulation().deferred_copies() != 0) std::_Exit(3);
            if (stats.backup_bytes < 2 * kMiB) std::_Exit(4);
          } else if (threw) {
            std::_Exit(5);  // committed, yet reported as failed
          }
          engine.wait("w");
          engine.resume("w");
          if (!testing::has_pattern(a, kMiB, 1) || !testing::has_pattern(b, kMiB + 3, 2))
            std::_Exit(6);
          engine.free(a);
          engine.free(b);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(ThreadStartTest, PauseAndResumeWorkWhenTheSystemRefusesThreads) {
  using testing::kMiB;
  // The engine starts two threads of its own: the background releaser, then
  // disk backup's closing thread. 0: no thread at all; 1: the releaser only;
  // 2: both; 3: both and one of the four preparing threads; then whatever
  // the rest of the cycle asks (disk transfers, unmapping).
  for (const int threads : {0, 1, 2, 3}) {
    SCOPED_TRACE("threads the system gives: " + std::to_string(threads));
    testing::FaultySim sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
    testing::TempDir dir;
    EngineOptions options;
    options.host.register_chunk_bytes = kMiB;  // several chunks to prepare and to unmap
    options.host.prepare_threads = 4;
    options.host.background_release = true;
    options.disk.chunk_bytes = kMiB;  // several blocks in flight
    g_threads_refused = 0;
    g_threads_left = threads;
    {
      Engine engine(sim, options);
      engine.set_disk_backup_dir(dir.path());
      // Host memory still held once what goes back in the background is
      // back (the disk staging buffer given back too).
      auto host_bytes = [&] {
        engine.trim_host_memory();
        engine.drain_host_releases();
        return sim.host_bytes();
      };
      const DevicePtr kept =
          engine.allocate(testing::request(8 * kMiB, 0, "w", testing::host_backup()));
      const DevicePtr freed =
          engine.allocate(testing::request(4 * kMiB, 0, "f", testing::host_backup()));
      const DevicePtr on_disk =
          engine.allocate(testing::request(4 * kMiB + 5, 0, "w", testing::disk_backup()));
      testing::fill_pattern(kept, 8 * kMiB, 7);
      testing::fill_pattern(on_disk, 4 * kMiB + 5, 8);
      engine.pause(std::nullopt);
      engine.resume(std::nullopt);
      EXPECT_TRUE(testing::has_pattern(kept, 8 * kMiB, 7));
      EXPECT_TRUE(testing::has_pattern(on_disk, 4 * kMiB + 5, 8));
      EXPECT_EQ(host_bytes(), 0u) << "resume gave its backups back";
      EXPECT_TRUE(testing::backup_fds(dir.path()).empty()) << "and closed its file";
      engine.pause(std::nullopt);
      engine.free(freed);  // its block goes back inline when no releaser started
      EXPECT_EQ(host_bytes(), 8 * kMiB) << "only the paused allocation's backup is left";
      engine.resume(std::nullopt);
      EXPECT_TRUE(testing::has_pattern(kept, 8 * kMiB, 7));
      EXPECT_TRUE(testing::has_pattern(on_disk, 4 * kMiB + 5, 8));
      engine.free(kept);
      engine.free(on_disk);
      engine.drain_host_releases();
      EXPECT_TRUE(testing::backup_fds(dir.path()).empty());
    }
    g_threads_left = -1;
    EXPECT_GT(g_threads_refused.load(), 0) << "no thread start was refused";
    EXPECT_EQ(sim.host_bytes(), 0u);
    EXPECT_EQ(sim.reserved_bytes(), 0u);
  }
}

}  // namespace
}  // namespace tms
