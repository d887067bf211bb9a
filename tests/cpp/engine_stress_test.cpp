// A long random stress with fault injection: worker threads drive their own
// tags through random allocate / write / free / pause / resume while another
// thread makes random driver calls fail, one or several at a time. After
// every step a worker checks its allocations against its model: states,
// contents on the device and in host backups, and the engine's per-tag
// statistics. Runs for TMS_STRESS_SECONDS (default 20) seconds, in CI and
// under ThreadSanitizer.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/sizes.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;
constexpr std::size_t kGranularity = 2 * kMiB;

double stress_seconds() {
  const char* text = std::getenv("TMS_STRESS_SECONDS");
  const double seconds = text != nullptr ? std::atof(text) : 20.0;
  return seconds > 0 ? seconds : 20.0;
}

std::size_t rounded(std::size_t size) { return round_up(size, kGranularity); }

struct Expected {
  std::size_t size;
  bool backup;
  bool paused = false;
  /// Active when a pause failed and said some allocations are unusable: it
  /// may be broken until the engine repairs it (the tag's broken_bytes is 0).
  bool maybe_broken = false;
  int fill;
};

/// One worker: its own tag, its own allocations, its own model.
class Worker {
 public:
  Worker(Engine& engine, int id)
      : engine_(engine),
        tag_("w" + std::to_string(id)),
        device_(id % 2),
        random_(static_cast<unsigned>(1000 + id)) {}

  /// Runs until `stop`; returns after the first failed check.
  void run(const std::atomic<bool>& stop) {
    while (!stop.load() && !::testing::Test::HasFailure()) {
      switch (pick(7)) {
        case 0:
        case 1:
          allocate();
          break;
        case 2:
          free_one();
          break;
        case 3:
        case 4:
          transition(/*pause=*/true);
          break;
        case 5:
          transition(/*pause=*/false);
          break;
        default:
          write_one();
      }
      verify();
      ++steps_;
    }
  }

  /// With the driver healthy again: everything resumes and is freed.
  void finish() {
    engine_.resume(tag_);  // also repairs what is still broken
    settle_broken();
    for (auto& [ptr, expected] : model_) {
      if (expected.paused && !expected.backup) expected.fill = 0;
      expected.paused = false;
    }
    verify();
    for (const auto& [ptr, expected] : model_) engine_.free(ptr);
    model_.clear();
  }

  [[nodiscard]] long steps() const { return steps_; }

 private:
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(random_); }

  void allocate() {
    if (model_.size() >= 6) return;
    const std::size_t size = 1 + static_cast<std::size_t>(pick(static_cast<int>(3 * kMiB)));
    AllocationRequest request{size, device_, tag_, {}};
    const bool backup = pick(3) != 0;
    const HostMemoryKind memory = pick(2) == 0 ? HostMemoryKind::kPinned : HostMemoryKind::kMmap;
    request.policy = backup ? testing::host_backup(memory) : BackupPolicy{};
    DevicePtr ptr = 0;
    try {
      ptr = engine_.allocate(request);
    } catch (const Error&) {
      return;  // nothing changed
    }
    const int fill = 1 + pick(250);
    std::memset(reinterpret_cast<void*>(ptr), fill, size);
    model_[ptr] = {size, backup, false, false, fill};
  }

  void free_one() {
    if (model_.empty()) return;
    auto it = model_.begin();
    std::advance(it, pick(static_cast<int>(model_.size())));
    try {
      engine_.free(it->first);
      model_.erase(it);
    } catch (const Error&) {
    }
  }

  void write_one() {
    for (auto& [ptr, expected] : model_) {
      if (expected.paused || expected.maybe_broken) continue;
      expected.fill = 1 + pick(250);
      std::memset(reinterpret_cast<void*>(ptr), expected.fill, expected.size);
      return;
    }
  }

  void transition(bool pause) {
    try {
      pause ? engine_.pause(tag_) : engine_.resume(tag_);
    } catch (const Error& error) {
      // All or nothing, except a pause that could not map everything back.
      if (pause && std::string(error.what()).find("unusable") != std::string::npos) {
        for (auto& [ptr, expected] : model_) expected.maybe_broken = !expected.paused;
      }
      settle_broken();
      return;
    }
    // It repaired broken allocations first (or refused).
    settle_broken();
    for (auto& [ptr, expected] : model_) {
      if (expected.paused == pause) continue;
      expected.paused = pause;
      if (!pause && !expected.backup) expected.fill = 0;  // fresh pages
    }
  }

  /// Once the tag has no broken bytes, the maybe-broken ones are active again.
  void settle_broken() {
    if (stats().broken_bytes != 0) return;
    for (auto& [ptr, expected] : model_) expected.maybe_broken = false;
  }

  [[nodiscard]] TagDeviceStats stats() const {
    for (const TagDeviceStats& entry : engine_.stats().entries) {
      if (entry.tag == tag_) return entry;
    }
    return {};
  }

  static bool holds(const std::uint8_t* bytes, std::size_t size, int fill) {
    for (std::size_t i = 0; i < size; i += 4096) {
      if (bytes[i] != fill) return false;
    }
    return bytes[size - 1] == fill;
  }

  void verify() {
    std::size_t paused = 0;
    std::size_t unpaused = 0;
    for (const auto& [ptr, expected] : model_) {
      ASSERT_TRUE(engine_.owns(ptr));
      if (expected.paused) {
        paused += rounded(expected.size);
        const std::uint8_t* backup = engine_.backup_pointer(ptr, expected.size);
        if (expected.backup) {
          ASSERT_NE(backup, nullptr) << tag_;
          ASSERT_TRUE(holds(backup, expected.size, expected.fill)) << tag_ << " backup contents";
        } else {
          ASSERT_EQ(backup, nullptr);
        }
        continue;
      }
      unpaused += rounded(expected.size);
      if (expected.maybe_broken) continue;  // its range may be unmapped
      ASSERT_TRUE(holds(reinterpret_cast<const std::uint8_t*>(ptr), expected.size, expected.fill))
          << tag_ << " device contents";
    }
    const TagDeviceStats entry = stats();
    ASSERT_EQ(entry.paused_bytes, paused) << tag_;
    ASSERT_EQ(entry.active_bytes + entry.broken_bytes, unpaused) << tag_;
  }

  Engine& engine_;
  const std::string tag_;
  const int device_;
  std::mt19937 random_;
  std::map<DevicePtr, Expected> model_;
  long steps_ = 0;
};

TEST(EngineStress, RandomOperationsOfManyThreadsWithRandomDriverFailures) {
  // Small enough for real out-of-memory too.
  testing::FaultySim sim(
      {.device_count = 2, .capacity_bytes = 96 * kMiB, .granularity = kGranularity});
  {
    EngineOptions options;
    options.host.prepare_threads = 2;
    options.host.register_chunk_bytes = kMiB;
    options.copies.chunk_bytes = kMiB;
    Engine engine(sim, options);

    std::atomic<bool> stop{false};
    std::vector<Worker> workers;
    workers.reserve(4);
    for (int id = 0; id < 4; ++id) workers.emplace_back(engine, id);
    std::vector<std::thread> threads;
    for (Worker& worker : workers) threads.emplace_back([&] { worker.run(stop); });
    std::thread injector([&] {
      std::mt19937 random(7);
      auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(random); };
      while (!stop.load()) {
        // One failure, sometimes two or three close together (double faults).
        const int burst = pick(4) == 0 ? 2 + pick(2) : 1;
        for (int i = 0; i < burst; ++i) {
          sim.fail_call(
              static_cast<DriverCall>(pick(static_cast<int>(DriverCall::kCount))), 1 + pick(4),
              pick(3) == 0 ? InjectedFailure::kOutOfMemory : InjectedFailure::kDriverError);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200 + pick(800)));
      }
    });

    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(stress_seconds());
    while (std::chrono::steady_clock::now() < deadline && !::testing::Test::HasFailure()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop.store(true);
    injector.join();
    for (std::thread& thread : threads) thread.join();
    ASSERT_FALSE(::testing::Test::HasFailure());

    sim.clear_failures();
    long steps = 0;
    for (Worker& worker : workers) {
      worker.finish();
      steps += worker.steps();
    }
    EXPECT_GT(steps, 100) << "the stress made too few steps to mean anything";
    engine.pause("no-such-tag");  // gives back what is still parked
    EXPECT_EQ(engine.stats().deferred_releases, 0u);
    engine.drain_host_releases();
  }
  EXPECT_EQ(sim.physical_bytes(0) + sim.physical_bytes(1), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.host_bytes(), 0u);
}

}  // namespace
}  // namespace tms
