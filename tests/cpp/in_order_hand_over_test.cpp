// Work into host memory still being prepared, run in the order it was added
// (InOrderHandOver), and the compressed pause that relies on it: its batches
// reuse device slots lane by lane, so a batch's encode and copy must be
// queued before a later batch's on the same lane, wherever each one runs.
#include "backup/in_order_hand_over.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "backup/compressed_copies.h"
#include "common/errors.h"
#include "forwarding_driver.h"
#include "preparation_test_support.h"
#include "vmm/parking_lot.h"

namespace tms {
namespace {

using testing::GatedCopySetup;

/// Which work ran, in what order, on which thread.
struct Runs {
  std::mutex mutex;
  std::vector<int> order;
  std::vector<std::thread::id> threads;

  std::function<void()> work(int id) {
    return [this, id] {
      std::lock_guard lock(mutex);
      order.push_back(id);
      threads.push_back(std::this_thread::get_id());
    };
  }
  std::vector<int> seen() {
    std::lock_guard lock(mutex);
    return order;
  }
  bool any_on(std::thread::id thread) {
    std::lock_guard lock(mutex);
    return std::count(threads.begin(), threads.end(), thread) != 0;
  }
};

/// Lets host registrations through one at a time, as many as allow() says,
/// and tells which memory the one it holds is for (a preparation registers
/// on one thread at a time, so at most one is held).
class SteppedRegisterDriver final : public testing::ForwardingDriver {
 public:
  explicit SteppedRegisterDriver(Driver& target) : ForwardingDriver(target) {}

  void host_register(void* ptr, std::size_t size) override {
    {
      std::unique_lock lock(mutex_);
      ++entered_;
      held_ = ptr;
      changed_.notify_all();
      changed_.wait(lock, [&] { return allowed_ > 0; });
      --allowed_;
      held_ = nullptr;
    }
    ForwardingDriver::host_register(ptr, size);
  }
  /// The memory of the registration held now, once `nth` (from 1) or a
  /// later one is held.
  void* held(std::size_t nth = 1) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return entered_ >= nth && held_ != nullptr; });
    return held_;
  }
  void allow(std::size_t registrations) {
    std::lock_guard lock(mutex_);
    allowed_ += registrations;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  void* held_ = nullptr;
  std::size_t entered_ = 0;
  std::size_t allowed_ = 0;
};

// Work whose memory is not registered yet waits for it on the preparing
// thread, and so does everything added after it, even work whose memory is
// ready: nothing overtakes.
TEST(InOrderHandOver, WorkRunsInTheOrderAddedAndWaitsForItsMemoryOnThePreparingThreads) {
  GatedCopySetup setup(64 * 1024);  // 16 chunks of 64 KiB, registrations held
  HostMemory ready_host(setup.sim);
  const HostBuffer ready = ready_host.acquire_one(4096, HostMemoryKind::kMmap);
  const HostBuffer& fresh = setup.batch.buffers[0];
  Runs runs;
  {
    InOrderHandOver hand_over;
    hand_over.add(fresh, 0, 100 * 1024, runs.work(1));  // spans chunks 0 and 1
    hand_over.add(ready, 0, 4096, runs.work(2));
    hand_over.add(fresh, 900 * 1024, 100 * 1024, runs.work(3));
    EXPECT_TRUE(runs.seen().empty()) << "nothing ran before the first work's memory was ready";
    setup.driver.open();
    hand_over.wait();
  }
  EXPECT_EQ(runs.seen(), (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(runs.any_on(std::this_thread::get_id())) << "the caller queued no work itself";
  setup.batch.wait_all();
}

TEST(InOrderHandOver, WorkIntoReadyMemoryRunsAtOnceOnTheCaller) {
  testing::FaultySim sim{{.device_count = 1}};
  HostMemory host(sim);
  const HostBuffer ready = host.acquire_one(8192, HostMemoryKind::kPinned);
  Runs runs;
  InOrderHandOver hand_over;
  hand_over.add(ready, 0, 8192, runs.work(1));
  EXPECT_EQ(runs.seen(), std::vector<int>{1});
  EXPECT_TRUE(runs.any_on(std::this_thread::get_id()));
  hand_over.wait();
}

// A failure stops the queue: wait() raises it, nothing after it runs, and
// adding more raises it again.
TEST(InOrderHandOver, WorkFailingOnAPreparingThreadIsRaisedByWaitAndNothingAfterItRuns) {
  GatedCopySetup setup(64 * 1024);
  Runs runs;
  InOrderHandOver hand_over;
  hand_over.add(setup.batch.buffers[0], 0, 4096, runs.work(1));
  hand_over.add(setup.batch.buffers[0], 4096, 4096,
                [] { throw DriverError("sim.copy_to_host", "CUDA_ERROR_UNKNOWN", ""); });
  hand_over.add(setup.batch.buffers[0], 8192, 4096, runs.work(3));
  setup.driver.open();
  EXPECT_THROW(hand_over.wait(), DriverError);
  EXPECT_EQ(runs.seen(), std::vector<int>{1});
  EXPECT_THROW(hand_over.add(setup.batch.buffers[0], 0, 1, runs.work(4)), DriverError);
  setup.batch.wait_all();  // the preparation itself went on
  EXPECT_EQ(runs.seen(), std::vector<int>{1});
}

// Destroyed without wait() (an exception leaving): the preparation of what
// it was handed stops, so no work starts after the destructor returns (the
// caller drains the streams then), and the batch raises instead of blocking.
TEST(InOrderHandOver, UnwindingStopsThePreparationSoNoWorkStartsAfter) {
  GatedCopySetup setup(64 * 1024);
  Runs runs;
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    setup.driver.open();
  });
  {
    InOrderHandOver hand_over;
    for (int i = 0; i < 16; ++i) {
      hand_over.add(setup.batch.buffers[0], static_cast<std::size_t>(i) * 64 * 1024, 64 * 1024,
                    runs.work(i));
    }
  }
  opener.join();
  const std::size_t ran = runs.seen().size();
  EXPECT_LT(ran, 16u) << "the preparation was not stopped";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(runs.seen().size(), ran) << "work started after the unwinding";
  EXPECT_THROW(setup.batch.wait_all(), InvalidState);
  setup.batch = HostBatch();
  EXPECT_EQ(setup.sim.host_bytes(), 0u);
}

/// Two fresh 1 MiB buffers of two batches, each prepared by threads of its
/// own behind its own SteppedRegisterDriver.
struct TwoBatches {
  testing::FaultySim sim{{.device_count = 1}};
  SteppedRegisterDriver first{sim};
  SteppedRegisterDriver second{sim};
  HostMemory first_host{first, GatedCopySetup::host_options()};
  HostMemory second_host{second, GatedCopySetup::host_options()};
  HostBatch first_batch = first_host.acquire({{GatedCopySetup::kSize, HostMemoryKind::kMmap}});
  HostBatch second_batch = second_host.acquire({{GatedCopySetup::kSize, HostMemoryKind::kMmap}});

  struct Parts {
    SteppedRegisterDriver& first;
    SteppedRegisterDriver& second;
    HostBatch& first_batch;
    HostBatch& second_batch;
    const HostBuffer& one;  // the first batch's buffer
    const HostBuffer& two;  // the second batch's
  };
  Parts parts_{
      first, second, first_batch, second_batch, first_batch.buffers[0], second_batch.buffers[0]};
  Parts& parts() { return parts_; }
};

// Work into two batches, each prepared on threads of its own. Unwinding
// stops the first batch, and its registering thread, let through while the
// destructor waits for it, runs the queue on and hands it to the second:
// that one must not run it once the destructor returned (it would run it on
// a destroyed queue).
TEST(InOrderHandOver, UnwindingStopsAPreparationTheQueueIsHandedToWhileStopping) {
  TwoBatches batches;
  auto& [first, second, first_batch, second_batch, one, two] = batches.parts();
  // Into the chunk whose registration is held: it runs right after it.
  const auto held = static_cast<std::size_t>(static_cast<std::uint8_t*>(first.held()) - one.data());
  Runs runs;
  auto hand_over = std::make_unique<InOrderHandOver>();
  hand_over->add(one, held, 4096, runs.work(1));
  hand_over->add(two, 0, 4096, runs.work(2));
  std::thread letter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the destructor is stopping
    first.allow(1);
  });
  hand_over.reset();
  letter.join();
  const std::vector<int> ran = runs.seen();
  EXPECT_EQ(std::count(ran.begin(), ran.end(), 2), 0);
  second.allow(1000);
  auto prepared = std::async(std::launch::async, [&] {
    try {
      second_batch.wait_all();
    } catch (const InvalidState&) {  // stopped by the unwinding: as good
    }
  });
  if (prepared.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Its thread runs the destroyed queue (stuck on its freed mutex): no
    // way on from here.
    ADD_FAILURE() << "the second batch was handed the queue after the unwinding";
    std::_Exit(1);
  }
  prepared.get();
  EXPECT_EQ(runs.seen(), ran) << "work ran after the unwinding";
}

// Work into two batches. The queue, handed from the first batch's
// preparation to the second's, goes on there with work into the first batch
// while the thread in wait() finds the first batch prepared and marks it so
// (HostBuffer::wait_prepared): reading and marking must not race (TSan).
TEST(InOrderHandOver, AQueueHandedToAnotherBatchLooksAtTheFirstWhileWaitMarksItPrepared) {
  TwoBatches batches;
  auto& [first, second, first_batch, second_batch, one, two] = batches.parts();
  const auto held_one =
      static_cast<std::size_t>(static_cast<std::uint8_t*>(first.held()) - one.data());
  const auto held_two =
      static_cast<std::size_t>(static_cast<std::uint8_t*>(second.held()) - two.data());
  Runs runs;
  std::promise<void> second_running;
  InOrderHandOver hand_over;
  hand_over.add(one, held_one, 4096, runs.work(1));
  hand_over.add(two, held_two, 4096, [&] {
    runs.work(2)();
    second_running.set_value();
    // Meanwhile the first batch is prepared and wait() marks it so.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  hand_over.add(one, 0, 4096, runs.work(3));
  auto waited = std::async(std::launch::async, [&] { hand_over.wait(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // wait() waits for `one`
  first.allow(1);
  (void)first.held(2);  // the queue was handed on to the second batch
  second.allow(1000);
  second_running.get_future().wait();
  first.allow(1000);
  waited.get();
  EXPECT_EQ(runs.seen(), (std::vector<int>{1, 2, 3}));
  first_batch.wait_all();
  second_batch.wait_all();
}

// A compressed pause into fresh host memory: every batch's encode and copy is
// queued by the threads registering that memory, never by the pausing thread
// waiting chunk by chunk, and three batches on two lanes (the third reuses
// the first one's slot) still come back exactly.
TEST(CompressedBackup, EncodesIntoHostMemoryStillBeingPreparedInBatchOrder) {
  testing::FaultySim sim{{.device_count = 1, .capacity_bytes = 256 * testing::kMiB}};
  testing::GatedRegisterDriver driver(sim);
  ParkingLot parking(driver);
  CopyPipeline pipeline(driver, {.chunk_bytes = 64 * 1024, .streams_per_device = 2});
  HostMemory host(driver, GatedCopySetup::host_options());
  testing::PatternedDeviceMemory device(driver, 3 * 256 * 1024);
  std::vector<CompressItem> items;
  for (std::size_t i = 0; i < 3; ++i) {
    items.push_back({0, device.va() + i * 256 * 1024, 200 * 1024 + i});
    testing::fill_pattern(items[i].device_ptr, items[i].size, static_cast<std::uint8_t>(7 + i));
  }

  std::optional<CompressedBackup> compressed;
  compressed.emplace(driver, parking, pipeline, items);  // measures (a stream wait opens the gate)
  driver.close();
  std::vector<HostRequest> requests;
  for (std::size_t i = 0; i < items.size(); ++i) {
    requests.push_back({compressed->stored_bytes(i), HostMemoryKind::kMmap, 0});
  }
  HostBatch batch = host.acquire(requests);
  std::vector<const HostBuffer*> targets;
  for (const HostBuffer& buffer : batch.buffers) targets.push_back(&buffer);

  std::thread::id writer;
  auto written = std::async(std::launch::async, [&] {
    writer = std::this_thread::get_id();
    compressed->write(targets);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(driver.copy_threads().empty()) << "a copy into unregistered memory was queued";
  driver.open();
  written.get();
  compressed.reset();
  batch.wait_all();
  const std::vector<std::thread::id> threads = driver.copy_threads();
  EXPECT_FALSE(threads.empty());
  EXPECT_EQ(std::count(threads.begin(), threads.end(), writer), 0)
      << "the pausing thread queued copies itself, behind the registrations";

  std::memset(reinterpret_cast<void*>(device.va()), 0, 3 * 256 * 1024);
  restore_compressed(driver, parking, pipeline, items, targets);
  for (std::size_t i = 0; i < items.size(); ++i) {
    EXPECT_TRUE(
        testing::has_pattern(items[i].device_ptr, items[i].size, static_cast<std::uint8_t>(7 + i)))
        << "item " << i;
  }
}

}  // namespace
}  // namespace tms
