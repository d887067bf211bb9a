// The backup paths under threads: host memory prepared by worker threads,
// given back by resume (unregistering and unmapping on two threads) and in
// the background, pooled while retention flips, and disk
// backups, while other threads allocate, free, pause and resume; disk
// backups switching from direct to buffered I/O. Run under
// ThreadSanitizer in CI; a deadlock shows up as a timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "disk_test_support.h"
#include "faulty_file_io.h"
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
    return testing::request(
        size, device, tag,
        disk ? testing::disk_backup()
             : testing::host_backup(mmap ? HostMemoryKind::kMmap : HostMemoryKind::kPinned));
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

// A filesystem that takes O_DIRECT at open() and refuses direct transfers:
// the I/O threads of one file are refused together and one of them clears
// the flag while the others wait to run again, buffered.
TEST(BackupConcurrency, DirectTransfersRefusedSwitchEachFileOnceUnderThreads) {
  SimDriver sim({.device_count = 2, .capacity_bytes = 64 * kMiB});
  testing::TempDir dir;
  FaultyFileIo io;
  EngineOptions options;
  options.disk.chunk_bytes = 256 * 1024;  // many blocks per file, four in flight
  options.file_io = &io;
  Engine engine(sim, options);
  engine.set_disk_backup_dir(dir.path());

  constexpr int kTags = 2;
  constexpr int kCycles = 6;
  const std::size_t size = 3 * kMiB + 4097;
  std::vector<DevicePtr> ptrs;
  for (int t = 0; t < kTags; ++t) {
    ptrs.push_back(engine.allocate(
        testing::request(size, t, "tag" + std::to_string(t), testing::disk_backup())));
    testing::fill_pattern(ptrs.back(), size, static_cast<std::uint8_t>(40 + t));
  }
  // Runs `cycle(tag)` for every tag at once, one thread each.
  auto on_every_tag = [&](auto&& cycle) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kTags; ++t)
      threads.emplace_back([&, t] { cycle("tag" + std::to_string(t)); });
    for (std::thread& thread : threads) thread.join();
  };
  auto contents_intact = [&] {
    for (int t = 0; t < kTags; ++t) {
      if (!testing::has_pattern(ptrs[static_cast<std::size_t>(t)], size,
                                static_cast<std::uint8_t>(40 + t))) {
        return false;
      }
    }
    return true;
  };

  // Writes refused: each pause makes a file opened with O_DIRECT.
  io.set_refuse_direct_transfers(true);
  on_every_tag([&](const std::string& tag) {
    for (int i = 0; i < kCycles; ++i) {
      engine.pause(tag);
      engine.resume(tag);
    }
  });
  EXPECT_TRUE(contents_intact());
  EXPECT_EQ(io.call_count(FileCall::kClearDirect), std::size_t{kTags * kCycles});
  // Reads refused: files written directly, read back after the refusal starts.
  io.set_refuse_direct_transfers(false);
  on_every_tag([&](const std::string& tag) { engine.pause(tag); });
  io.set_refuse_direct_transfers(true);
  on_every_tag([&](const std::string& tag) { engine.resume(tag); });
  EXPECT_TRUE(contents_intact());
  EXPECT_EQ(io.call_count(FileCall::kClearDirect), std::size_t{kTags * (kCycles + 1)});
  for (const DevicePtr ptr : ptrs) engine.free(ptr);
  // The last resume handed its files to the closing thread.
  engine.drain_host_releases();
  EXPECT_TRUE(testing::backup_fds(dir.path()).empty());
}

}  // namespace
}  // namespace tms
