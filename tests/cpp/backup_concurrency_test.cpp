// The backup paths under threads: host memory prepared by worker threads,
// given back by resume (unregistering and unmapping on two threads) and in
// the background, pooled while retention flips, and disk
// backups, while other threads allocate, free, pause and resume. Run under
// ThreadSanitizer in CI; a deadlock shows up as a timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "disk_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

TEST(BackupConcurrency, PreparationPoolBackgroundReleaseAndDiskUnderThreads) {
  SimDriver sim({.device_count = 2, .capacity_bytes = 256 * kMiB});
  testing::TempDir dir;

  EngineOptions options;
  options.copies.chunk_bytes = 300 * 1024;
  options.host.register_chunk_bytes = 256 * 1024;
  options.host.prepare_threads = 3;
  options.host.small_request_bytes = kMiB;
  options.host.arena_bytes = 2 * kMiB;
  options.host.background_release = true;
  options.disk.chunk_bytes = 512 * 1024;
  auto engine = std::make_unique<Engine>(sim, options);
  engine->set_disk_backup_dir(dir.path());

  auto request = [](std::size_t size, int device, const char* tag, bool disk, bool mmap) {
    return testing::request(size, device, tag,
                            {.cpu_backup = !disk,
                             .host_kind = mmap ? HostMemoryKind::kMmap : HostMemoryKind::kPinned,
                             .disk_backup = disk});
  };

  std::vector<DevicePtr> cycled;
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 8; ++i) {
    sizes.push_back(kMiB / 2 + 4099 * static_cast<std::size_t>(i) + (i == 3 ? 2 * kMiB : 0));
    cycled.push_back(
        engine->allocate(request(sizes.back(), i % 2, "cycled", i % 4 == 1, i % 3 == 0)));
    testing::fill_pattern(cycled.back(), sizes.back(), static_cast<std::uint8_t>(i));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> corrupted{0};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    for (int cycle = 0; cycle < 12; ++cycle) {
      engine->pause("cycled");
      engine->resume("cycled");
      for (std::size_t i = 0; i < cycled.size(); ++i) {
        if (!testing::has_pattern(cycled[i], sizes[i], static_cast<std::uint8_t>(i))) ++corrupted;
      }
    }
    stop = true;
  });
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; !stop && round < 200; ++round) {
        const std::size_t size = (1 + (round + w) % 3) * 300 * 1024 + 11;
        const char* tag = w == 0 ? "churn0" : "churn1";
        const DevicePtr ptr =
            engine->allocate(request(size, w, tag, round % 5 == 0, round % 2 == 0));
        testing::fill_pattern(ptr, size, static_cast<std::uint8_t>(round));
        engine->pause(tag);
        engine->resume(tag);
        if (!testing::has_pattern(ptr, size, static_cast<std::uint8_t>(round))) ++corrupted;
        if (round % 3 == 0) engine->pause(tag);  // freed while paused
        engine->free(ptr);
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; !stop; ++i) {
      engine->set_retain_cpu_backup(i % 2 == 0);
      (void)engine->stats();
      if (i % 7 == 0) engine->trim_host_memory();
      std::this_thread::yield();
    }
  });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(corrupted.load(), 0);

  engine->set_retain_cpu_backup(false);
  for (DevicePtr ptr : cycled) engine->free(ptr);
  engine->drain_host_releases();
  EXPECT_EQ(engine->stats().deferred_releases, 0u);
  engine.reset();
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
  EXPECT_TRUE(dir.files().empty());
}

}  // namespace
}  // namespace tms
