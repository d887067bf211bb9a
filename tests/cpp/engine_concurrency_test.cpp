// Threads allocating, filling, checking and freeing while others pause and
// resume, free paused allocations and read statistics. Run under
// ThreadSanitizer in CI; a deadlock shows up as a timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

constexpr SimDriverOptions kTwoDevices{.device_count = 2, .capacity_bytes = 256 * kMiB};

TEST(EngineConcurrency, AllocateFreePauseResumeFromManyThreads) {
  SimDriver sim(kTwoDevices);
  auto engine = std::make_unique<Engine>(sim);
  constexpr int kWorkers = 4;
  constexpr int kRounds = 40;

  // Long-lived backed-up allocations that one thread cycles.
  std::vector<DevicePtr> cycled;
  for (int i = 0; i < 6; ++i) {
    AllocationRequest request{
        2 * kMiB + 17 * static_cast<std::size_t>(i), i % 2, "cycled", {BackupKind::kHost}};
    cycled.push_back(engine->allocate(request));
    testing::fill_pattern(cycled.back(), request.size, static_cast<std::uint8_t>(i));
  }
  // Allocations another thread frees while they may be paused or mid-pause.
  std::vector<DevicePtr> doomed;
  for (int i = 0; i < 8; ++i) {
    doomed.push_back(engine->allocate({2 * kMiB, 0, "cycled", testing::backup_if(i % 2 == 0)}));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> corrupted{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < kRounds; ++round) {
        const std::size_t size = (1 + (round + w) % 3) * kMiB;
        const DevicePtr ptr =
            engine->allocate({size, w % 2, "busy", testing::backup_if(w % 2 == 0)});
        testing::fill_pattern(ptr, size, static_cast<std::uint8_t>(w * 7 + round));
        if (!testing::has_pattern(ptr, size, static_cast<std::uint8_t>(w * 7 + round))) ++corrupted;
        engine->free(ptr);
      }
    });
  }
  threads.emplace_back([&] {
    for (int cycle = 0; cycle < 30; ++cycle) {
      engine->pause("cycled");
      engine->resume("cycled");
      for (std::size_t i = 0; i < cycled.size(); ++i) {
        if (!testing::has_pattern(cycled[i], 2 * kMiB + 17 * i, static_cast<std::uint8_t>(i))) {
          ++corrupted;
        }
      }
    }
    stop = true;
  });
  threads.emplace_back([&] {
    for (DevicePtr ptr : doomed) {
      std::this_thread::yield();
      engine->free(ptr);
    }
  });
  threads.emplace_back([&] {
    while (!stop) {
      (void)engine->stats();
      (void)engine->backup_pointer(cycled[0], 64);
      (void)engine->owns(cycled[1]);
    }
  });
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(corrupted.load(), 0);
  for (DevicePtr ptr : cycled) engine->free(ptr);
  EXPECT_EQ(sim.physical_bytes(0) + sim.physical_bytes(1), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(engine->stats().entries.size(), 2u);  // counters of "busy" and "cycled" remain
}

TEST(EngineConcurrency, PauseAndResumeOfDifferentTagsFromDifferentThreads) {
  SimDriver sim(kTwoDevices);
  Engine engine(sim);
  std::vector<DevicePtr> ptrs;
  for (int t = 0; t < 4; ++t) {
    ptrs.push_back(engine.allocate({2 * kMiB, 0, "tag" + std::to_string(t), {BackupKind::kHost}}));
    testing::fill_pattern(ptrs.back(), 2 * kMiB, static_cast<std::uint8_t>(t));
  }
  std::vector<std::thread> threads;
  std::atomic<int> corrupted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string tag = "tag" + std::to_string(t);
      for (int i = 0; i < 25; ++i) {
        engine.pause(tag);
        engine.resume(tag);
        if (!testing::has_pattern(ptrs[static_cast<std::size_t>(t)], 2 * kMiB,
                                  static_cast<std::uint8_t>(t))) {
          ++corrupted;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(corrupted.load(), 0);
  for (DevicePtr ptr : ptrs) engine.free(ptr);
}

}  // namespace
}  // namespace tms
