// The host backup path on the simulated driver: chunked copies on several
// lanes, host blocks registered in chunks by worker threads while the
// copies run, batching of small backups, the pool, the mmap kind giving
// memory back, and background release.
#include "backup/host_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backup/copy_pipeline.h"
#include "common/errors.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "preparation_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::GatedCopySetup;
using testing::kMiB;

/// Forwards to a SimDriver and checks, at the moment of every copy, that
/// its host range lies inside one registered range (so the copy engine can
/// move it directly and the chunk was ready before the copy was queued).
class CheckingDriver final : public testing::ForwardingDriver {
 public:
  explicit CheckingDriver(Driver& target) : ForwardingDriver(target) {}

  [[nodiscard]] std::string_view name() const override { return "checking"; }
  void host_free(void* ptr, std::size_t size) override {
    {
      std::lock_guard lock(mutex_);
      const auto begin = reinterpret_cast<std::uintptr_t>(ptr);
      for (const auto& [start, length] : registered_) {
        if (start >= begin && start < begin + size) ++freed_while_registered_;
      }
    }
    ForwardingDriver::host_free(ptr, size);
  }
  void host_register(void* ptr, std::size_t size) override {
    ForwardingDriver::host_register(ptr, size);
    std::lock_guard lock(mutex_);
    registered_[reinterpret_cast<std::uintptr_t>(ptr)] = size;
  }
  void host_unregister(void* ptr) override {
    ForwardingDriver::host_unregister(ptr);
    std::lock_guard lock(mutex_);
    registered_.erase(reinterpret_cast<std::uintptr_t>(ptr));
  }
  void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                          StreamHandle stream) override {
    check(dst, size);
    ForwardingDriver::copy_to_host_async(device, dst, src, size, stream);
  }
  void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                            StreamHandle stream) override {
    check(src, size);
    ForwardingDriver::copy_to_device_async(device, dst, src, size, stream);
  }

  [[nodiscard]] std::size_t unregistered_copies() const {
    std::lock_guard lock(mutex_);
    return unregistered_copies_;
  }
  [[nodiscard]] std::size_t freed_while_registered() const {
    std::lock_guard lock(mutex_);
    return freed_while_registered_;
  }
  [[nodiscard]] std::size_t copies() const {
    std::lock_guard lock(mutex_);
    return copies_;
  }

 private:
  void check(const void* host, std::size_t size) {
    std::lock_guard lock(mutex_);
    ++copies_;
    const auto begin = reinterpret_cast<std::uintptr_t>(host);
    auto it = registered_.upper_bound(begin);
    if (it == registered_.begin()) {
      ++unregistered_copies_;
      return;
    }
    --it;
    if (begin + size > it->first + it->second) ++unregistered_copies_;
  }

  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::size_t> registered_;
  std::size_t unregistered_copies_ = 0;
  std::size_t freed_while_registered_ = 0;
  std::size_t copies_ = 0;
};

constexpr SimDriverOptions kTwoDevices{.device_count = 2, .capacity_bytes = 256 * kMiB};

/// Small chunks everywhere, so test-sized allocations exercise splitting:
/// copy pieces of 96 KiB + 1 (not a page multiple), registered chunks of
/// 256 KiB, 4 preparing threads, 3 lanes per device.
EngineOptions small_chunks() {
  EngineOptions options;
  options.copies.chunk_bytes = 96 * 1024 + 1;
  options.copies.streams_per_device = 3;
  options.host.register_chunk_bytes = 256 * 1024;
  options.host.prepare_threads = 4;
  options.host.small_request_bytes = kMiB;
  options.host.arena_bytes = 4 * kMiB;
  return options;
}

AllocationRequest backed(std::size_t size, int device, const std::string& tag = "t",
                         HostMemoryKind kind = HostMemoryKind::kPinned) {
  return testing::request(size, device, tag, testing::host_backup(kind));
}

class HostBackupTest : public ::testing::Test {
 protected:
  HostBackupTest() : sim_(kTwoDevices), driver_(sim_) {}

  void make_engine(EngineOptions options = small_chunks()) {
    engine_.reset();
    engine_ = std::make_unique<Engine>(driver_, options);
  }

  testing::FaultySim sim_;
  CheckingDriver driver_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(HostBackupTest, ChunkedCopiesAreExactForAnySizeOnEveryDevice) {
  make_engine();
  // Around the copy piece (96 KiB + 1), the registered chunk (256 KiB), the
  // small-request limit (1 MiB) and the arena (4 MiB).
  const std::vector<std::size_t> sizes = {
      1,        4095, 96 * 1024,   96 * 1024 + 1,    96 * 1024 + 2, 256 * 1024 - 1, 256 * 1024 + 1,
      kMiB - 1, kMiB, kMiB + 4097, 3 * kMiB + 12345, 4 * kMiB + 1,  9 * kMiB + 7};
  std::vector<DevicePtr> ptrs;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const int device = static_cast<int>(i % 2);
    ptrs.push_back(
        engine_->allocate(backed(sizes[i], device, device == 0 ? "a" : "b",
                                 i % 3 == 0 ? HostMemoryKind::kMmap : HostMemoryKind::kPinned)));
    testing::fill_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i * 7 + 1));
  }
  for (int cycle = 0; cycle < 2; ++cycle) {
    engine_->pause(std::nullopt);
    EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), 0u);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::uint8_t* backup = engine_->backup_pointer(ptrs[i], sizes[i]);
      ASSERT_NE(backup, nullptr);
      EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(backup), sizes[i],
                                       static_cast<std::uint8_t>(i * 7 + 1)))
          << "backup of size " << sizes[i];
    }
    engine_->resume(std::nullopt);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i * 7 + 1)))
          << "size " << sizes[i] << " cycle " << cycle;
    }
  }
  EXPECT_EQ(driver_.unregistered_copies(), 0u) << "every copy within one registered chunk";
  EXPECT_EQ(driver_.freed_while_registered(), 0u) << "unregister before free";
  EXPECT_EQ(sim_.live_streams(), 6u) << "three lanes on each of two devices";
  EXPECT_EQ(sim_.host_bytes(), 0u);
  EXPECT_EQ(sim_.registered_host_ranges(), 0u);
  for (DevicePtr ptr : ptrs) engine_->free(ptr);
}

TEST_F(HostBackupTest, ManySmallBackupsShareAFewBlocks) {
  make_engine();
  std::vector<DevicePtr> ptrs;
  std::size_t total = 0;
  for (int i = 0; i < 200; ++i) {
    const std::size_t size = 5000 + 211 * static_cast<std::size_t>(i);
    total += size;
    ptrs.push_back(engine_->allocate(backed(size, i % 2)));
    testing::fill_pattern(ptrs.back(), size, static_cast<std::uint8_t>(i));
  }
  const std::size_t allocs_before = sim_.call_count(DriverCall::kHostAlloc);
  engine_->pause("t");
  const std::size_t blocks = sim_.call_count(DriverCall::kHostAlloc) - allocs_before;
  EXPECT_LE(blocks, total / (4 * kMiB) + 2) << "packed into 4 MiB blocks, not one each";
  engine_->resume("t");
  for (int i = 0; i < 200; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)],
                                     5000 + 211 * static_cast<std::size_t>(i),
                                     static_cast<std::uint8_t>(i)));
  }
  EXPECT_EQ(driver_.unregistered_copies(), 0u);
  EXPECT_EQ(sim_.host_bytes(), 0u) << "given back after resume";
  for (DevicePtr ptr : ptrs) engine_->free(ptr);
}

TEST_F(HostBackupTest, FreeingOneOfABatchKeepsTheOthersExact) {
  make_engine();
  const DevicePtr a = engine_->allocate(backed(300 * 1024, 0));
  const DevicePtr b = engine_->allocate(backed(500 * 1024 + 3, 0));
  testing::fill_pattern(a, 300 * 1024, 1);
  testing::fill_pattern(b, 500 * 1024 + 3, 2);
  engine_->pause("t");
  engine_->free(a);  // shares a block with b
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(b, 500 * 1024 + 3, 2));
  EXPECT_EQ(sim_.host_bytes(), 0u);
  engine_->free(b);
}

TEST_F(HostBackupTest, RegistrationFailureInAWorkerLeavesEverythingActive) {
  make_engine();
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 4; ++i) {
    ptrs.push_back(engine_->allocate(backed(3 * kMiB + 17, i % 2)));
    testing::fill_pattern(ptrs.back(), 3 * kMiB + 17, static_cast<std::uint8_t>(i));
  }
  const std::size_t physical = sim_.physical_bytes(0) + sim_.physical_bytes(1);
  for (const int nth : {1, 5, 20, 48}) {
    sim_.fail_call(DriverCall::kHostRegister, nth);
    EXPECT_THROW(engine_->pause("t"), DriverError) << "host_register #" << nth;
    EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), physical);
    EXPECT_EQ(sim_.host_bytes(), 0u);
    EXPECT_EQ(sim_.registered_host_ranges(), 0u);
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)], 3 * kMiB + 17,
                                       static_cast<std::uint8_t>(i)));
    }
  }
  sim_.clear_failures();
  engine_->pause("t");
  engine_->resume("t");
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)], 3 * kMiB + 17,
                                     static_cast<std::uint8_t>(i)));
    engine_->free(ptrs[static_cast<std::size_t>(i)]);
  }
}

TEST_F(HostBackupTest, PoolServesRecreatedAllocationsWhileRetentionIsOn) {
  make_engine();
  engine_->set_retain_cpu_backup(true);
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 3; ++i) ptrs.push_back(engine_->allocate(backed(2 * kMiB + 5, i % 2)));
  engine_->pause("t");
  engine_->resume("t");
  const std::size_t held = sim_.host_bytes();
  EXPECT_GT(held, 0u) << "retained";
  // The trainer frees and re-creates its tensors between steps.
  for (DevicePtr ptr : ptrs) engine_->free(ptr);
  EXPECT_EQ(sim_.host_bytes(), held) << "pooled, not freed";
  ptrs.clear();
  for (int i = 0; i < 3; ++i) {
    ptrs.push_back(engine_->allocate(backed(2 * kMiB + 5, i % 2)));
    testing::fill_pattern(ptrs.back(), 2 * kMiB + 5, static_cast<std::uint8_t>(40 + i));
  }
  const std::size_t allocs = sim_.call_count(DriverCall::kHostAlloc);
  const std::size_t registers = sim_.call_count(DriverCall::kHostRegister);
  engine_->pause("t");
  EXPECT_EQ(sim_.call_count(DriverCall::kHostAlloc), allocs) << "warm: no fresh host memory";
  EXPECT_EQ(sim_.call_count(DriverCall::kHostRegister), registers);
  engine_->resume("t");
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)], 2 * kMiB + 5,
                                     static_cast<std::uint8_t>(40 + i)));
  }
  EXPECT_EQ(sim_.host_bytes(), held);
  engine_->set_retain_cpu_backup(false);  // trims the pool; retained backups stay
  EXPECT_EQ(sim_.host_bytes(), held);
  engine_->pause("t");
  engine_->resume("t");  // the first resume that does not retain gives them back
  EXPECT_EQ(sim_.host_bytes(), 0u);
  EXPECT_EQ(sim_.registered_host_ranges(), 0u);
  for (DevicePtr ptr : ptrs) engine_->free(ptr);
}

TEST_F(HostBackupTest, PoolIsBoundedAndNeverHoldsMmapMemory) {
  EngineOptions options = small_chunks();
  options.host.pool_limit_bytes = 3 * kMiB;
  make_engine(options);
  engine_->set_retain_cpu_backup(true);
  const DevicePtr pinned_a = engine_->allocate(backed(2 * kMiB, 0));
  const DevicePtr pinned_b = engine_->allocate(backed(2 * kMiB, 1));
  const DevicePtr mapped = engine_->allocate(backed(2 * kMiB, 0, "t", HostMemoryKind::kMmap));
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_EQ(sim_.host_bytes(), 6 * kMiB);
  engine_->free(mapped);
  EXPECT_EQ(sim_.host_bytes(), 4 * kMiB) << "mmap memory goes back to the OS";
  engine_->free(pinned_a);
  engine_->free(pinned_b);
  EXPECT_EQ(sim_.host_bytes(), 2 * kMiB) << "the pool keeps at most 3 MiB";
  engine_->trim_host_memory();
  EXPECT_EQ(sim_.host_bytes(), 0u);
}

TEST_F(HostBackupTest, MmapKindGivesMemoryBackAfterResume) {
  make_engine();
  const DevicePtr ptr = engine_->allocate(backed(6 * kMiB + 1, 1, "t", HostMemoryKind::kMmap));
  testing::fill_pattern(ptr, 6 * kMiB + 1, 9);
  engine_->pause("t");
  EXPECT_GE(sim_.host_bytes(), 6 * kMiB);
  EXPECT_GT(sim_.registered_host_ranges(), 1u) << "registered in chunks";
  engine_->resume("t");
  EXPECT_EQ(sim_.host_bytes(), 0u);
  EXPECT_EQ(sim_.registered_host_ranges(), 0u);
  EXPECT_TRUE(testing::has_pattern(ptr, 6 * kMiB + 1, 9));
  engine_->free(ptr);
}

TEST_F(HostBackupTest, ResumeGivesMemoryBackBeforeItReturnsEvenWithBackgroundRelease) {
  EngineOptions options = small_chunks();
  options.host.background_release = true;
  make_engine(options);
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 6; ++i) {
    ptrs.push_back(engine_->allocate(backed(kMiB + 333 * static_cast<std::size_t>(i), i % 2)));
    testing::fill_pattern(ptrs.back(), kMiB + 333 * static_cast<std::size_t>(i),
                          static_cast<std::uint8_t>(i));
  }
  for (int cycle = 0; cycle < 3; ++cycle) {
    engine_->pause("t");
    engine_->resume("t");
    // Nothing left for the background thread: no drain before looking.
    EXPECT_EQ(sim_.host_bytes(), 0u) << "cycle " << cycle;
    EXPECT_EQ(sim_.registered_host_ranges(), 0u);
    for (int i = 0; i < 6; ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)],
                                       kMiB + 333 * static_cast<std::size_t>(i),
                                       static_cast<std::uint8_t>(i)));
    }
  }
  EXPECT_EQ(driver_.freed_while_registered(), 0u) << "unregister before free";
  // A failure is kept and retried by the next operation; the resume succeeds.
  engine_->pause("t");
  sim_.fail_call(DriverCall::kHostFree, 1);
  engine_->resume("t");
  EXPECT_EQ(engine_->stats().deferred_releases, 1u);
  EXPECT_GT(sim_.host_bytes(), 0u);
  engine_->pause("no-such-tag");
  EXPECT_EQ(engine_->stats().deferred_releases, 0u);
  EXPECT_EQ(sim_.host_bytes(), 0u);
  // The background thread still serves free(): destroying the engine waits for it.
  engine_->pause("t");
  for (DevicePtr ptr : ptrs) engine_->free(ptr);
  engine_.reset();
  EXPECT_EQ(sim_.host_bytes(), 0u);
}

TEST(HostMemory, BuffersArePageAlignedAndCopyExtentsStopAtChunkEnds) {
  testing::FaultySim sim(kTwoDevices);
  HostMemoryOptions options;
  options.register_chunk_bytes = 64 * 1024;
  options.prepare_threads = 2;
  options.small_request_bytes = kMiB;
  HostMemory host(sim, options);
  HostBatch batch = host.acquire({{5000, HostMemoryKind::kPinned},
                                  {200 * 1024, HostMemoryKind::kMmap},
                                  {3, HostMemoryKind::kPinned},
                                  {2 * kMiB, HostMemoryKind::kPinned}});
  ASSERT_EQ(batch.buffers.size(), 4u);
  for (const HostBuffer& buffer : batch.buffers) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 4096, 0u);
    std::size_t covered = 0;
    while (covered < buffer.size()) {
      const std::size_t extent = buffer.copy_extent(covered, buffer.size() - covered);
      ASSERT_GT(extent, 0u);
      EXPECT_LE(extent, 64u * 1024) << "no copy spans two registered chunks";
      covered += extent;
    }
    EXPECT_EQ(covered, buffer.size());
  }
  batch.wait_all();
  EXPECT_EQ(batch.buffers[0].kind(), HostMemoryKind::kPinned);
  EXPECT_EQ(batch.buffers[1].kind(), HostMemoryKind::kMmap);
  EXPECT_EQ(sim.call_count(DriverCall::kHostAlloc), 3u)
      << "one shared pinned block, one mmap block, one large block";
  batch = HostBatch();
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
}

// Registration is serialized in the driver (cuMemHostRegister holds a
// lock), so one worker at a time registers while the others go on faulting
// chunks in: with the first registration held, the rest of the block is
// faulted in anyway, and no two threads are ever in host_register at once.
TEST(HostMemory, OneWorkerRegistersAtATimeWhileTheOthersFaultTheRestIn) {
  testing::FaultySim sim{{.device_count = 1}};
  testing::GatedRegisterDriver driver(sim);
  HostMemoryOptions options;
  options.register_chunk_bytes = 64 * 1024;
  options.prepare_threads = 4;
  HostMemory host(driver, options);
  constexpr std::size_t kSize = std::size_t{1} << 20;  // 16 chunks
  HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
  const auto resident_pages = [&] {
    std::vector<unsigned char> pages(kSize / 4096);
    if (mincore(batch.buffers[0].data(), kSize, pages.data()) != 0) return std::size_t{0};
    return static_cast<std::size_t>(
        std::count_if(pages.begin(), pages.end(), [](unsigned char p) { return (p & 1) != 0; }));
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (resident_pages() < kSize / 4096 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(resident_pages(), kSize / 4096)
      << "the workers not registering faulted every chunk in while one registration was held";
  driver.open();
  batch.wait_all();
  EXPECT_EQ(driver.most_registering(), 1u);
  EXPECT_EQ(sim.registered_host_ranges(), 16u);
  batch = HostBatch();
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
}

// Copies into a fresh block are queued by the threads that register its
// chunks, right after each registration (cuMemHostRegister holds a driver
// lock that copies queued from another thread wait behind): queueing returns
// while nothing is registered yet, and the copies land exactly.
TEST(HostMemory, CopiesIntoChunksStillBeingPreparedAreQueuedByThePreparingThreads) {
  GatedCopySetup setup(40 * 1024);
  {
    QueuedCopies copies(setup.pipeline, /*to_host=*/true);
    std::thread::id caller;
    auto queued = std::async(std::launch::async, [&] {
      caller = std::this_thread::get_id();
      copies.add(setup.items());
    });
    const bool returned = queued.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
    setup.driver.open();
    queued.get();
    EXPECT_TRUE(returned) << "queueing waited for host memory to be registered";
    copies.wait();
    const std::vector<std::thread::id> threads = setup.driver.copy_threads();
    EXPECT_EQ(threads.size(), 32u) << "40 KiB pieces that never span two 64 KiB chunks";
    EXPECT_EQ(std::count(threads.begin(), threads.end(), caller), 0)
        << "every copy was queued by a preparing thread";
  }
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(setup.batch.buffers[0].data()),
                                   GatedCopySetup::kSize, 42));
  setup.batch = HostBatch();
  EXPECT_EQ(setup.sim.host_bytes(), 0u);
  EXPECT_EQ(setup.sim.registered_host_ranges(), 0u);
}

// Unwinding before the copies were waited for stops the preparation: what
// was handed over for chunks not registered yet never runs (the streams are
// drained after that, so the memory may be freed at once), and waiting for
// the batch throws instead of blocking.
TEST(HostMemory, UnwindingStopsThePreparationAndDropsWhatItWasHanded) {
  GatedCopySetup setup(64 * 1024);
  // Each worker is held in its first registration; let them finish it
  // once the unwinding below has asked them to stop.
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    setup.driver.open();
  });
  {
    QueuedCopies copies(setup.pipeline, /*to_host=*/true);
    copies.add(setup.items());
  }  // without wait(), as when an exception leaves
  opener.join();
  EXPECT_LE(setup.driver.copy_threads().size(), 2u)
      << "only the chunks being registered were copied";
  EXPECT_EQ(setup.driver.copies_after_a_stream_wait(), 0u) << "a copy started after the drain";
  EXPECT_THROW(setup.batch.wait_all(), InvalidState);
  setup.batch = HostBatch();
  EXPECT_EQ(setup.sim.host_bytes(), 0u);
  EXPECT_EQ(setup.sim.registered_host_ranges(), 0u);
}

// A copy that fails on the thread preparing its chunk fails the wait with
// its error, as one the caller queued itself would; the unwinding stops the
// preparation before it drains the streams, so nothing handed over starts
// after, and the batch gives everything back.
TEST(HostMemory, ACopyFailingOnAPreparingThreadFailsTheWaitAndNothingStartsAfterTheDrain) {
  GatedCopySetup setup(64 * 1024);
  {
    QueuedCopies copies(setup.pipeline, /*to_host=*/true);
    copies.add(setup.items());
    EXPECT_TRUE(setup.driver.copy_threads().empty())
        << "nothing is registered: every copy was handed over";
    setup.sim.fail_call(DriverCall::kCopyToHost, 2);
    setup.driver.open();
    EXPECT_THROW(copies.wait(), DriverError);
  }
  EXPECT_GE(setup.sim.call_count(DriverCall::kCopyToHost), 2u) << "the failing copy was made";
  EXPECT_EQ(setup.driver.copies_after_a_stream_wait(), 0u);
  EXPECT_THROW(setup.batch.wait_all(), DriverError) << "the batch keeps the copy's error";
  setup.batch = HostBatch();
  EXPECT_EQ(setup.sim.host_bytes(), 0u);
  EXPECT_EQ(setup.sim.registered_host_ranges(), 0u);
}

}  // namespace
}  // namespace tms
