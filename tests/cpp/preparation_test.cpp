// Adversarial tests of host memory preparation with one registering
// worker at a time: registrations that fail at any chunk, registrations
// that take varying time (so chunks queue up in any order), stopping while
// faulted chunks wait to be registered, and copies handed over that fail,
// with threads waiting for chunks throughout. Every test runs under a
// watchdog: a hang fails it instead of blocking the suite.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "common/errors.h"
#include "driver/sim_driver.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "preparation_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

constexpr std::size_t kChunk = 4096;
constexpr std::size_t kChunks = 64;
constexpr std::size_t kSize = kChunk * kChunks;

/// Runs `body` on its own thread; a body still running after `limit`
/// ends the process (a hang cannot be unwound).
template <typename Body>
void within(std::chrono::seconds limit, const std::string& what, Body&& body) {
  auto done = std::async(std::launch::async, std::forward<Body>(body));
  if (done.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s\n", what.c_str());
    std::fflush(stderr);
    std::_Exit(3);
  }
  done.get();
}

/// A quarter of the registrations take a random 0-300 us, and all are
/// counted, so the chunks queue up for the registering worker in varying
/// orders and the turn to register passes often.
class JitterDriver final : public testing::ForwardingDriver {
 public:
  explicit JitterDriver(Driver& target, unsigned seed) : ForwardingDriver(target), random_(seed) {}

  void host_register(void* ptr, std::size_t size) override {
    std::chrono::microseconds pause{};
    {
      std::lock_guard lock(mutex_);
      most_ = std::max(most_, ++in_);
      // Most registrations are quick, so the registering worker often
      // empties the queue and leaves while others are about to add to it.
      if (random_() % 4 == 0) pause = std::chrono::microseconds(random_() % 300);
    }
    std::this_thread::sleep_for(pause);
    try {
      ForwardingDriver::host_register(ptr, size);
    } catch (...) {
      std::lock_guard lock(mutex_);
      --in_;
      throw;
    }
    std::lock_guard lock(mutex_);
    --in_;
    ++registered_;
  }
  [[nodiscard]] std::size_t most() const {
    std::lock_guard lock(mutex_);
    return most_;
  }
  [[nodiscard]] std::size_t registered() const {
    std::lock_guard lock(mutex_);
    return registered_;
  }

 private:
  mutable std::mutex mutex_;
  std::minstd_rand random_;
  std::size_t in_ = 0;
  std::size_t most_ = 0;
  std::size_t registered_ = 0;
};

HostMemoryOptions many_workers() {
  HostMemoryOptions options;
  options.register_chunk_bytes = kChunk;
  options.prepare_threads = 8;
  return options;
}

/// Threads that wait for given chunks of a buffer (copy_extent), and
/// count how they came back.
class Waiters {
 public:
  Waiters(const HostBuffer& buffer, const std::vector<std::size_t>& chunks) {
    for (const std::size_t chunk : chunks) {
      threads_.emplace_back([this, &buffer, chunk] {
        try {
          (void)buffer.copy_extent(chunk * kChunk, kChunk);
          ++ready_;
        } catch (const Error&) {
          ++failed_;
        }
      });
    }
  }
  ~Waiters() { join(); }
  Waiters(const Waiters&) = delete;
  Waiters& operator=(const Waiters&) = delete;

  void join() {
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  [[nodiscard]] int ready() const { return ready_.load(); }
  [[nodiscard]] int failed() const { return failed_.load(); }

 private:
  std::vector<std::thread> threads_;
  std::atomic<int> ready_{0};
  std::atomic<int> failed_{0};
};

// A registration failing at any chunk, with 8 workers and chunks queued
// for the one registering: every thread waiting for a chunk comes back
// (ready, or with the error), waiting for the batch throws, and the batch
// gives back all its memory and registrations.
TEST(Preparation, RegistrationFailingAtAnyChunkWakesEveryWaiterAndLeaksNothing) {
  for (int nth = 1; nth <= static_cast<int>(kChunks); ++nth) {
    SCOPED_TRACE("host_register #" + std::to_string(nth) + " fails");
    testing::FaultySim sim{{.device_count = 1}};
    JitterDriver driver(sim, static_cast<unsigned>(nth));
    HostMemory host(driver, many_workers());
    within(std::chrono::seconds(20), "failure at #" + std::to_string(nth), [&] {
      sim.fail_call(DriverCall::kHostRegister, nth);
      HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
      {
        Waiters waiters(batch.buffers[0], {0, 1, kChunks / 2, kChunks - 2, kChunks - 1});
        EXPECT_THROW(batch.wait_all(), DriverError);
        waiters.join();
        EXPECT_EQ(waiters.ready() + waiters.failed(), 5);
      }
      batch = HostBatch();
    });
    EXPECT_EQ(sim.host_bytes(), 0u);
    EXPECT_EQ(sim.registered_host_ranges(), 0u);
    EXPECT_LE(driver.most(), 1u);
  }
}

// Registrations of varying length, many rounds: every chunk is registered
// exactly once (the simulated driver refuses a second registration), by
// one thread at a time, and copies handed over land exactly.
TEST(Preparation, EveryChunkIsRegisteredOnceWhateverOrderTheyQueueIn) {
  for (unsigned round = 0; round < 60; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    testing::FaultySim sim{{.device_count = 1, .capacity_bytes = std::size_t{64} << 20}};
    JitterDriver driver(sim, round);
    HostMemory host(driver, many_workers());
    CopyPipeline pipeline(driver, {.chunk_bytes = 3000, .streams_per_device = 2});
    testing::PatternedDeviceMemory device(driver, kSize);
    within(std::chrono::seconds(20), "round " + std::to_string(round), [&] {
      HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
      {
        Waiters waiters(batch.buffers[0], {kChunks - 1, 0, 17});
        QueuedCopies copies(pipeline, /*to_host=*/true);
        copies.add({{0, device.va(), batch.buffers[0].data(), kSize, &batch.buffers[0]}});
        // Joined before waiting for the batch: that detaches the blocks,
        // which copy_extent reads without a lock.
        waiters.join();
        EXPECT_EQ(waiters.ready(), 3);
        copies.wait();
        batch.wait_all();
      }
      EXPECT_EQ(driver.registered(), kChunks);
      EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(batch.buffers[0].data()),
                                       kSize, 42));
      batch = HostBatch();
    });
    EXPECT_EQ(driver.most(), 1u);
    EXPECT_EQ(sim.host_bytes(), 0u);
    EXPECT_EQ(sim.registered_host_ranges(), 0u);
  }
}

// Stopping while the registering worker is held in a registration and the
// others have queued the rest of the block behind it: stop returns once
// that registration is done, the queued chunks are never registered,
// threads waiting for them get an error, and nothing is left registered.
TEST(Preparation, StoppingWithChunksQueuedForRegistrationNeitherHangsNorLeaks) {
  testing::FaultySim sim{{.device_count = 1}};
  testing::GatedRegisterDriver driver(sim);
  HostMemoryOptions options = many_workers();
  options.prepare_threads = 4;
  HostMemory host(driver, options);
  within(std::chrono::seconds(20), "stop", [&] {
    HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
    Waiters waiters(batch.buffers[0], {0, kChunks - 1});
    // Let the workers fault the rest in behind the held registration.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::thread opener([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      driver.open();
    });
    batch.buffers[0].stop_preparing();
    opener.join();
    waiters.join();
    EXPECT_EQ(waiters.ready() + waiters.failed(), 2);
    EXPECT_GE(waiters.failed(), 1) << "the last chunk was queued, not registered";
    EXPECT_THROW(batch.wait_all(), InvalidState);
    EXPECT_EQ(driver.most_registering(), 1u);
    batch = HostBatch();
  });
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
}

// A copy handed over failing on the registering worker, with the rest of
// the block queued behind it: the wait fails with the copy's error,
// threads waiting for chunks queued behind it come back, no copy starts
// after the streams were drained, and the batch gives everything back.
TEST(Preparation, AHandedCopyFailingWithChunksQueuedBehindItWakesTheirWaiters) {
  for (int nth = 1; nth <= 40; nth += 3) {
    SCOPED_TRACE("copy #" + std::to_string(nth) + " fails");
    testing::FaultySim sim{{.device_count = 1, .capacity_bytes = std::size_t{64} << 20}};
    testing::GatedRegisterDriver driver(sim);
    HostMemory host(driver, many_workers());
    CopyPipeline pipeline(driver, {.chunk_bytes = 3000, .streams_per_device = 2});
    testing::PatternedDeviceMemory device(driver, kSize);
    within(std::chrono::seconds(20), "copy failure #" + std::to_string(nth), [&] {
      HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
      {
        Waiters waiters(batch.buffers[0], {kChunks - 1, kChunks / 2});
        {
          QueuedCopies copies(pipeline, /*to_host=*/true);
          copies.add({{0, device.va(), batch.buffers[0].data(), kSize, &batch.buffers[0]}});
          sim.fail_call(DriverCall::kCopyToHost, nth);
          driver.open();
          EXPECT_THROW(copies.wait(), DriverError);
        }
        waiters.join();
        EXPECT_EQ(waiters.ready() + waiters.failed(), 2);
      }
      EXPECT_EQ(driver.copies_after_a_stream_wait(), 0u);
      batch = HostBatch();
    });
    EXPECT_EQ(sim.host_bytes(), 0u);
    EXPECT_EQ(sim.registered_host_ranges(), 0u);
  }
}

// The test driver's count of threads in host_register (most_registering)
// must not count a registration that failed as still running: after one
// failed registration and then only sequential ones, at most one thread
// was ever in host_register.
TEST(Preparation, GatedDriverDoesNotCountAFailedRegistrationAsRunning) {
  testing::FaultySim sim{{.device_count = 1}};
  testing::GatedRegisterDriver driver(sim);
  driver.open();
  HostMemoryOptions options;
  options.register_chunk_bytes = kChunk;
  options.prepare_threads = 1;  // every registration on the caller's thread, one after another
  HostMemory host(driver, options);
  sim.fail_call(DriverCall::kHostRegister, 1);
  EXPECT_THROW((void)host.acquire({{kSize, HostMemoryKind::kMmap}}), DriverError);
  HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
  batch.wait_all();
  EXPECT_EQ(driver.most_registering(), 1u) << "registrations never overlapped";
  batch = HostBatch();
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
}

}  // namespace
}  // namespace tms
