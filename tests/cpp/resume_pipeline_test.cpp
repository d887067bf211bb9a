// The order of a resume's driver calls: a batch's restore copies are queued
// before the next batch is created and mapped (they overlap on a GPU), every
// allocation is mapped and restored before any host backup is given back,
// and a failure in a later batch waits for the copies already queued before
// it unmaps anything, then leaves everything paused with its backup.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "common/errors.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

/// Records the calls a resume's order is judged by, from any thread.
class RecordingDriver final : public testing::ForwardingDriver {
 public:
  explicit RecordingDriver(Driver& target) : ForwardingDriver(target) {}

  PhysicalHandle create_physical(int device, std::size_t size) override {
    record("create_physical");
    return ForwardingDriver::create_physical(device, size);
  }
  void map(DevicePtr va, std::size_t size, PhysicalHandle handle) override {
    record("map");
    ForwardingDriver::map(va, size, handle);
  }
  void unmap(DevicePtr va, std::size_t size) override {
    record("unmap");
    ForwardingDriver::unmap(va, size);
  }
  void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                            StreamHandle stream) override {
    record("copy_to_device");
    ForwardingDriver::copy_to_device_async(device, dst, src, size, stream);
  }
  void synchronize_stream(int device, StreamHandle stream) override {
    record("synchronize_stream");
    ForwardingDriver::synchronize_stream(device, stream);
  }
  void host_unregister(void* ptr) override {
    record("host_unregister");
    ForwardingDriver::host_unregister(ptr);
  }
  void host_free(void* ptr, std::size_t size) override {
    record("host_free");
    ForwardingDriver::host_free(ptr, size);
  }

  void clear() {
    std::lock_guard lock(mutex_);
    calls_.clear();
  }
  [[nodiscard]] std::vector<std::string> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  void record(const char* call) {
    std::lock_guard lock(mutex_);
    calls_.emplace_back(call);
  }

  mutable std::mutex mutex_;
  std::vector<std::string> calls_;
};

std::size_t first(const std::vector<std::string>& calls, const std::string& name,
                  std::size_t from = 0) {
  return static_cast<std::size_t>(
      std::find(calls.begin() + static_cast<std::ptrdiff_t>(from), calls.end(), name) -
      calls.begin());
}

std::size_t last(const std::vector<std::string>& calls, const std::string& name) {
  const auto found = std::find(calls.rbegin(), calls.rend(), name);
  return found == calls.rend()
             ? calls.size()
             : calls.size() - 1 - static_cast<std::size_t>(found - calls.rbegin());
}

std::size_t count(const std::vector<std::string>& calls, const std::string& name) {
  return static_cast<std::size_t>(std::count(calls.begin(), calls.end(), name));
}

class ResumePipelineTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kSize = 3 * kMiB + 11;
  static constexpr std::size_t kCount = 5;

  ResumePipelineTest() : driver_(sim_) {
    EngineOptions options;
    options.resume.batch_allocations = 2;  // batches of 2, 2 and 1
    options.host.register_chunk_bytes = kMiB;
    engine_ = std::make_unique<Engine>(driver_, options);
    for (std::size_t i = 0; i < kCount; ++i) {
      AllocationRequest request;
      request.tag = "weights";
      request.size = kSize;
      request.policy = testing::host_backup();
      ptrs_.push_back(engine_->allocate(request));
      testing::fill_pattern(ptrs_.back(), kSize, static_cast<std::uint8_t>(i + 1));
    }
    engine_->pause("weights");
    driver_.clear();
  }

  ~ResumePipelineTest() override {
    for (DevicePtr ptr : ptrs_) engine_->free(ptr);
  }

  /// Everything is paused with its backup, nothing is mapped, and a retry works.
  void expect_paused_then_resumable() {
    for (const TagDeviceStats& entry : engine_->stats().entries) {
      EXPECT_EQ(entry.active_bytes, 0u);
      EXPECT_EQ(entry.backup_bytes, kCount * kSize);
    }
    EXPECT_EQ(sim_.physical_bytes(0), 0u);
    EXPECT_EQ(sim_.mapped_bytes(), 0u);
    for (std::size_t i = 0; i < kCount; ++i) {
      const std::uint8_t* backup = engine_->backup_pointer(ptrs_[i], kSize);
      ASSERT_NE(backup, nullptr);
      EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(backup), kSize,
                                       static_cast<std::uint8_t>(i + 1)));
    }
    sim_.clear_failures();
    engine_->resume("weights");
    for (std::size_t i = 0; i < kCount; ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs_[i], kSize, static_cast<std::uint8_t>(i + 1)));
    }
  }

  testing::FaultySim sim_;
  RecordingDriver driver_;
  std::unique_ptr<Engine> engine_;
  std::vector<DevicePtr> ptrs_;
};

TEST_F(ResumePipelineTest, CopiesOfABatchAreQueuedBeforeTheNextIsMappedAndNothingIsGivenBackEarly) {
  engine_->resume("weights");
  const std::vector<std::string> calls = driver_.calls();
  ASSERT_EQ(count(calls, "create_physical"), kCount);
  // The first batch's copies are queued before the second batch is created.
  const std::size_t third_create =
      first(calls, "create_physical",
            first(calls, "create_physical", first(calls, "create_physical") + 1) + 1);
  EXPECT_LT(first(calls, "copy_to_device"), third_create);
  // Every create, map and copy (and the wait for the copies) comes before
  // the first host backup is given back.
  const std::size_t first_release = first(calls, "host_unregister");
  ASSERT_LT(first_release, calls.size());
  for (const char* before : {"create_physical", "map", "copy_to_device", "synchronize_stream"}) {
    EXPECT_LT(last(calls, before), first_release) << before;
  }
  EXPECT_EQ(sim_.host_bytes(), 0u) << "and all of it before resume returned";
  for (std::size_t i = 0; i < kCount; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs_[i], kSize, static_cast<std::uint8_t>(i + 1)));
  }
}

TEST_F(ResumePipelineTest, OutOfMemoryInALaterBatchWaitsForQueuedCopiesThenUnwindsEverything) {
  sim_.fail_call(DriverCall::kCreatePhysical, 3,
                 InjectedFailure::kOutOfMemory);  // the second batch
  try {
    engine_->resume("weights");
    ADD_FAILURE() << "the resume succeeded";
  } catch (const OutOfMemory& error) {
    EXPECT_NE(std::string(error.what()).find("stays paused"), std::string::npos) << error.what();
    EXPECT_GT(error.bytes_needed(), 0u);
  }
  const std::vector<std::string> calls = driver_.calls();
  EXPECT_GT(first(calls, "synchronize_stream"), first(calls, "copy_to_device"));
  EXPECT_LT(last(calls, "synchronize_stream"), first(calls, "unmap"))
      << "queued copies are waited for before their memory is unmapped";
  EXPECT_EQ(count(calls, "unmap"), 2u) << "the first batch's two mappings";
  EXPECT_EQ(count(calls, "host_unregister"), 0u) << "no backup was given back";
  expect_paused_then_resumable();
}

TEST_F(ResumePipelineTest, FailedCopyInALaterBatchLeavesEverythingPaused) {
  sim_.fail_call(DriverCall::kCopyToDevice, 5);  // within the second batch
  EXPECT_THROW(engine_->resume("weights"), DriverError);
  EXPECT_EQ(count(driver_.calls(), "host_unregister"), 0u);
  expect_paused_then_resumable();
}

}  // namespace
}  // namespace tms
