#include "core/engine.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/errors.h"
#include "common/log.h"
#include "disk_test_support.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest()
      : sim_({.device_count = 2, .capacity_bytes = 64 * kMiB}),
        engine_(std::make_unique<Engine>(sim_)) {}

  DevicePtr allocate(std::size_t size, const std::string& tag, bool backup = false,
                     int device = 0) {
    return engine_->allocate(testing::request(size, device, tag, testing::backup_if(backup)));
  }

  testing::FaultySim sim_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, AddressesStayAndContentsFollowTheBackupPolicy) {
  const std::size_t size = 3 * kMiB + 123;  // not a granularity multiple
  const DevicePtr kept = allocate(size, "weights", /*backup=*/true);
  const DevicePtr dropped = allocate(size, "weights", /*backup=*/false);
  testing::fill_pattern(kept, size, 1);
  testing::fill_pattern(dropped, size, 2);

  engine_->pause("weights");
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  EXPECT_TRUE(testing::faults_when_touched([&] { *reinterpret_cast<volatile char*>(kept) = 1; }));
  EXPECT_TRUE(
      testing::faults_when_touched([&] { (void)*reinterpret_cast<volatile char*>(dropped); }));

  engine_->resume("weights");
  EXPECT_EQ(sim_.physical_bytes(0), 8 * kMiB);
  EXPECT_TRUE(testing::has_pattern(kept, size, 1));
  EXPECT_TRUE(testing::all_zero(dropped, size));
  EXPECT_EQ(sim_.host_bytes(), 0u) << "backup memory is given back after resume";
  engine_->free(kept);
  engine_->free(dropped);
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
}

TEST_F(EngineTest, TagsPauseAndResumeIndependently) {
  const DevicePtr kv = allocate(2 * kMiB, "kv_cache");
  const DevicePtr weights = allocate(2 * kMiB, "weights", true);
  testing::fill_pattern(weights, 2 * kMiB, 9);

  engine_->pause("kv_cache");
  EXPECT_EQ(sim_.physical_bytes(0), 2 * kMiB);
  testing::fill_pattern(weights, 2 * kMiB, 10);  // still active and usable
  engine_->pause("weights");
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  engine_->resume("kv_cache");
  EXPECT_EQ(sim_.physical_bytes(0), 2 * kMiB);
  EXPECT_TRUE(
      testing::faults_when_touched([&] { (void)*reinterpret_cast<volatile char*>(weights); }));
  engine_->resume("weights");
  EXPECT_TRUE(testing::has_pattern(weights, 2 * kMiB, 10));
  engine_->free(kv);
  engine_->free(weights);
}

TEST_F(EngineTest, RepeatingPauseOrResumeIsHarmless) {
  const DevicePtr ptr = allocate(2 * kMiB, "t", true);
  testing::fill_pattern(ptr, 2 * kMiB, 4);
  engine_->resume("t");  // nothing paused
  engine_->pause("t");
  engine_->pause("t");
  engine_->pause("unknown-tag");
  engine_->resume(std::nullopt);
  engine_->resume(std::nullopt);
  EXPECT_TRUE(testing::has_pattern(ptr, 2 * kMiB, 4));
  const EngineStats stats = engine_->stats();
  ASSERT_EQ(stats.entries.size(), 1u);
  EXPECT_EQ(stats.entries[0].pause_count, 1u);
  EXPECT_EQ(stats.entries[0].resume_count, 1u);
  engine_->free(ptr);
}

TEST_F(EngineTest, FreeWhilePausedGivesEverythingBack) {
  const DevicePtr ptr = allocate(4 * kMiB, "t", true);
  engine_->pause("t");
  EXPECT_GT(sim_.host_bytes(), 0u);
  engine_->free(ptr);
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  EXPECT_EQ(sim_.host_bytes(), 0u);
  engine_->resume("t");  // the freed allocation is not resurrected
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
}

TEST_F(EngineTest, FreeRejectsUnknownAndInteriorPointers) {
  const DevicePtr ptr = allocate(2 * kMiB, "t");
  EXPECT_THROW(engine_->free(ptr + 64), InvalidArgument);
  EXPECT_THROW(engine_->free(0x1000), InvalidArgument);
  EXPECT_TRUE(engine_->owns(ptr + 64));
  engine_->free(ptr);
  EXPECT_FALSE(engine_->owns(ptr));
  EXPECT_THROW(engine_->free(ptr), InvalidArgument);
}

TEST_F(EngineTest, AllocationsLiveOnTheirOwnDevice) {
  const DevicePtr on0 = allocate(2 * kMiB, "t", true, 0);
  const DevicePtr on1 = allocate(4 * kMiB, "t", true, 1);
  testing::fill_pattern(on0, 2 * kMiB, 5);
  testing::fill_pattern(on1, 4 * kMiB, 6);
  EXPECT_EQ(sim_.physical_bytes(0), 2 * kMiB);
  EXPECT_EQ(sim_.physical_bytes(1), 4 * kMiB);
  engine_->pause("t");
  EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), 0u);
  engine_->resume("t");
  EXPECT_EQ(sim_.physical_bytes(1), 4 * kMiB);
  EXPECT_TRUE(testing::has_pattern(on0, 2 * kMiB, 5));
  EXPECT_TRUE(testing::has_pattern(on1, 4 * kMiB, 6));
  const EngineStats stats = engine_->stats();
  ASSERT_EQ(stats.entries.size(), 2u);
  EXPECT_EQ(stats.entries[1].device, 1);
  EXPECT_EQ(stats.entries[1].active_bytes, 4 * kMiB);
  engine_->free(on0);
  engine_->free(on1);
  EXPECT_THROW(allocate(2 * kMiB, "t", false, 2), InvalidArgument);
}

TEST_F(EngineTest, AllocationUsesTheCurrentDeviceByDefault) {
  sim_.set_current_device(1);
  const DevicePtr ptr = allocate(2 * kMiB, "t", false, -1);
  sim_.set_current_device(0);
  EXPECT_EQ(sim_.physical_bytes(1), 2 * kMiB);
  engine_->free(ptr);
}

TEST_F(EngineTest, ResumeBeyondCapacityKeepsEverythingPausedUntilMemoryIsFreed) {
  const DevicePtr weights = allocate(16 * kMiB, "weights", true);
  const DevicePtr kv = allocate(16 * kMiB, "kv", false);
  testing::fill_pattern(weights, 16 * kMiB, 42);
  engine_->pause(std::nullopt);

  // Another user takes most of the device meanwhile.
  const PhysicalHandle blocker = sim_.create_physical(0, 48 * kMiB);
  const testing::SimSnapshot before = testing::snapshot(sim_);
  try {
    engine_->resume(std::nullopt);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    EXPECT_EQ(error.bytes_needed(), 32 * kMiB);
    EXPECT_EQ(error.bytes_free(), 16 * kMiB);
    EXPECT_NE(std::string(error.what()).find("33554432 bytes"), std::string::npos) << error.what();
  }
  EXPECT_EQ(testing::snapshot(sim_), before) << "resume must give back what it took";
  EXPECT_NE(engine_->backup_pointer(weights, 16 * kMiB), nullptr);
  EXPECT_TRUE(testing::has_pattern(
      reinterpret_cast<std::uintptr_t>(engine_->backup_pointer(weights, 16 * kMiB)), 16 * kMiB,
      42));
  for (const TagDeviceStats& entry : engine_->stats().entries) EXPECT_EQ(entry.active_bytes, 0u);

  sim_.release_physical(blocker);
  engine_->resume(std::nullopt);
  EXPECT_TRUE(testing::has_pattern(weights, 16 * kMiB, 42));
  engine_->free(weights);
  engine_->free(kv);
}

/// Fails memory_info (cuMemGetInfo) once `fail_memory_info` is set.
class MemoryInfoFailingDriver final : public testing::ForwardingDriver {
 public:
  using ForwardingDriver::ForwardingDriver;
  DeviceMemoryInfo memory_info(int device) override {
    if (fail_memory_info) throw DriverError("sim.memory_info", "CUDA_ERROR_UNKNOWN", "injected");
    return ForwardingDriver::memory_info(device);
  }
  bool fail_memory_info = false;
};

TEST(EngineOutOfMemory, AFailingMemoryInfoNeverReplacesTheOutOfMemoryError) {
  testing::FaultySim sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
  MemoryInfoFailingDriver driver(sim);
  Engine engine(driver);
  const DevicePtr weights =
      engine.allocate(testing::request(16 * kMiB, 0, "w", testing::host_backup()));
  testing::fill_pattern(weights, 16 * kMiB, 5);
  engine.pause("w");
  const testing::SimSnapshot before = testing::snapshot(sim);
  driver.fail_memory_info = true;
  sim.fail_call(DriverCall::kCreatePhysical, 1, InjectedFailure::kOutOfMemory);
  try {
    engine.resume("w");
    ADD_FAILURE() << "resumed while out of memory";
  } catch (const OutOfMemory& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("needs 16777216 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("on device 0, unknown free"), std::string::npos) << message;
    EXPECT_NE(message.find("everything stays paused with its backup"), std::string::npos)
        << message;
  }
  EXPECT_EQ(testing::snapshot(sim), before) << "the resume gave back what it took";
  // So does an allocation too large to round up to the granularity.
  EXPECT_THROW((void)engine.allocate(testing::request(SIZE_MAX, 0, "w")), OutOfMemory);
  driver.fail_memory_info = false;
  engine.resume("w");
  EXPECT_TRUE(testing::has_pattern(weights, 16 * kMiB, 5));
  engine.free(weights);
}

TEST_F(EngineTest, MemoryMarginTurnsTightAllocationsIntoOutOfMemory) {
  engine_->set_memory_margin_bytes(60 * kMiB);
  EXPECT_THROW(allocate(8 * kMiB, "t"), OutOfMemory);
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  const DevicePtr ptr = allocate(4 * kMiB, "t");
  engine_->pause("t");
  engine_->set_memory_margin_bytes(62 * kMiB);
  EXPECT_THROW(engine_->resume("t"), OutOfMemory);
  engine_->set_memory_margin_bytes(0);
  engine_->resume("t");
  engine_->free(ptr);
}

TEST_F(EngineTest, BackupPointerCoversInteriorRangesWhilePaused) {
  const std::size_t size = 2 * kMiB + 100;
  const DevicePtr ptr = allocate(size, "t", true);
  testing::fill_pattern(ptr, size, 77);
  EXPECT_EQ(engine_->backup_pointer(ptr, size), nullptr) << "no backup while active";
  engine_->pause("t");
  std::uint8_t* whole = engine_->backup_pointer(ptr, size);
  ASSERT_NE(whole, nullptr);
  EXPECT_EQ(engine_->backup_pointer(ptr + 1000, 24), whole + 1000);
  EXPECT_THROW((void)engine_->backup_pointer(ptr + 1000, size), InvalidArgument);
  EXPECT_EQ(engine_->backup_pointer(0x1000, 8), nullptr) << "foreign pointer";
  engine_->resume("t");
  engine_->free(ptr);
}

TEST_F(EngineTest, RetentionKeepsHostMemoryForTheNextPause) {
  engine_->set_retain_cpu_backup(true);
  const DevicePtr ptr = allocate(2 * kMiB, "t", true);
  testing::fill_pattern(ptr, 2 * kMiB, 1);
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_EQ(sim_.host_bytes(), 2 * kMiB);
  const std::size_t host_allocs = sim_.call_count(DriverCall::kHostAlloc);
  testing::fill_pattern(ptr, 2 * kMiB, 2);
  engine_->pause("t");
  EXPECT_EQ(sim_.call_count(DriverCall::kHostAlloc), host_allocs) << "retained buffer reused";
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(ptr, 2 * kMiB, 2));
  engine_->set_retain_cpu_backup(false);
  EXPECT_EQ(sim_.host_bytes(), 2 * kMiB) << "turning retention off frees nothing at once";
  engine_->free(ptr);
  EXPECT_EQ(sim_.host_bytes(), 0u) << "free gives a retained backup back";
}

TEST_F(EngineTest, RetainedBackupStaysReadableAtOneAddressUntilANonRetainingResume) {
  engine_->set_retain_cpu_backup(true);
  const DevicePtr ptr = allocate(2 * kMiB, "t", true);
  testing::fill_pattern(ptr, 2 * kMiB, 1);
  EXPECT_EQ(engine_->backup_pointer(ptr, 2 * kMiB), nullptr) << "never paused: no backup yet";
  engine_->pause("t");
  std::uint8_t* const host = engine_->backup_pointer(ptr, 2 * kMiB);
  ASSERT_NE(host, nullptr);
  engine_->resume("t");
  // Active again: the retained copy is what the pause saved, at the same address.
  ASSERT_EQ(engine_->backup_pointer(ptr, 2 * kMiB), host);
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(host), 2 * kMiB, 1));
  EXPECT_EQ(engine_->backup_pointer(ptr + 4096, 16), host + 4096);
  for (std::uint8_t cycle = 2; cycle < 5; ++cycle) {
    testing::fill_pattern(ptr, 2 * kMiB, cycle);
    engine_->pause("t");
    engine_->resume("t");
    ASSERT_EQ(engine_->backup_pointer(ptr, 2 * kMiB), host) << "cycle " << int(cycle);
    EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(host), 2 * kMiB, cycle));
  }
  engine_->set_retain_cpu_backup(false);
  EXPECT_EQ(engine_->backup_pointer(ptr, 2 * kMiB), host) << "still readable after turning off";
  EXPECT_EQ(sim_.host_bytes(), 2 * kMiB);
  engine_->pause("t");
  engine_->resume("t");  // does not retain: gives the backup back
  EXPECT_EQ(engine_->backup_pointer(ptr, 2 * kMiB), nullptr);
  EXPECT_EQ(sim_.host_bytes(), 0u);
  engine_->free(ptr);
}

TEST_F(EngineTest, StatsReportBytesPerTagAndState) {
  const DevicePtr a = allocate(2 * kMiB, "a", true);
  const DevicePtr b = allocate(1, "b");
  engine_->pause("a");
  const EngineStats stats = engine_->stats();
  ASSERT_EQ(stats.entries.size(), 2u);
  EXPECT_EQ(stats.entries[0].tag, "a");
  EXPECT_EQ(stats.entries[0].paused_bytes, 2 * kMiB);
  EXPECT_EQ(stats.entries[0].backup_bytes, 2 * kMiB);
  EXPECT_EQ(stats.entries[0].pause_count, 1u);
  EXPECT_GT(stats.entries[0].last_pause_unix, 0.0);
  EXPECT_EQ(stats.entries[1].tag, "b");
  EXPECT_EQ(stats.entries[1].active_bytes, 2 * kMiB) << "rounded to the granularity";
  const std::string json = stats_to_json(stats, "sim");
  EXPECT_NE(json.find("\"tag\": \"a\""), std::string::npos) << json;
  // Unix times keep sub-second precision through JSON (ranks compare them).
  const std::size_t at = json.find("\"last_pause_unix\": ");
  ASSERT_NE(at, std::string::npos) << json;
  EXPECT_EQ(std::strtod(json.c_str() + at + 19, nullptr), stats.entries[0].last_pause_unix) << json;
  engine_->resume("a");
  engine_->free(a);
  engine_->free(b);
}

TEST_F(EngineTest, InfoLogSaysWhatMovedWhereAndWhereTheTimeWent) {
  const DevicePtr weights = allocate(3 * kMiB, "weights", /*backup=*/true);
  const DevicePtr cache = allocate(kMiB, "weights", /*backup=*/false, /*device=*/1);
  set_log_level(LogLevel::kInfo);
  set_log_context("rank 3");
  ::testing::internal::CaptureStderr();
  engine_->pause("weights");
  engine_->resume("weights");
  const std::string lines = ::testing::internal::GetCapturedStderr();
  set_log_context("");
  set_log_level(LogLevel::kWarning);
  // Device memory is counted in whole granules (2 MiB); the backup holds what was asked for.
  EXPECT_NE(lines.find("[torch_memory_saver INFO rank 3] paused 2 allocations (6.0 MiB, 3.0 MiB "
                       "to host) of tag 'weights' on devices 0, 1 in "),
            std::string::npos)
      << lines;
  EXPECT_NE(lines.find("synchronize "), std::string::npos) << lines;
  EXPECT_NE(lines.find("host backup "), std::string::npos) << lines;
  EXPECT_NE(lines.find("release "), std::string::npos) << lines;
  EXPECT_NE(lines.find("resumed 2 allocations (6.0 MiB, 3.0 MiB from host) of tag 'weights' on "
                       "devices 0, 1 in "),
            std::string::npos)
      << lines;
  const std::size_t restore = lines.find("host restore ");
  EXPECT_NE(restore, std::string::npos) << lines;
  EXPECT_EQ(lines.find("host restore ", restore + 1), std::string::npos)
      << "one host restore phase: the pipeline's, not a second one for the kind" << lines;
  engine_->free(weights);
  engine_->free(cache);
}

TEST_F(EngineTest, InfoLogOfADiskOnlyResumeHasNoHostRestorePhase) {
  testing::TempDir dir;
  engine_->set_disk_backup_dir(dir.path());
  const DevicePtr ptr = engine_->allocate(testing::request(kMiB, 0, "d", testing::disk_backup()));
  set_log_level(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  engine_->pause("d");
  engine_->resume("d");
  const std::string lines = ::testing::internal::GetCapturedStderr();
  set_log_level(LogLevel::kWarning);
  EXPECT_NE(lines.find("disk restore "), std::string::npos) << lines;
  EXPECT_EQ(lines.find("host restore "), std::string::npos) << "nothing came from host" << lines;
  engine_->free(ptr);
}

TEST_F(EngineTest, ANewlineInATagCannotForgeALogLine) {
  const std::string tag = "x\n[torch_memory_saver ERROR] forged\r\x01";
  const DevicePtr ptr = allocate(kMiB, tag);
  set_log_level(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  engine_->pause(tag);
  const std::string lines = ::testing::internal::GetCapturedStderr();
  set_log_level(LogLevel::kWarning);
  EXPECT_EQ(lines.find("\n[torch_memory_saver ERROR] forged"), std::string::npos) << lines;
  EXPECT_NE(lines.find("tag 'x\\n[torch_memory_saver ERROR] forged\\r\\x01'"), std::string::npos)
      << lines;
  engine_->free(ptr);
}

TEST_F(EngineTest, DevicesBelowMinusOneAndSizesThatWouldWrapAreRefused) {
  EXPECT_THROW(allocate(kMiB, "t", false, -2), InvalidArgument);
  EXPECT_THROW(allocate(kMiB, "t", false, -1000), InvalidArgument);
  for (const std::size_t size : {SIZE_MAX, SIZE_MAX - 5, SIZE_MAX - 2 * kMiB + 2}) {
    try {
      allocate(size, "t");
      ADD_FAILURE() << "allocated " << size << " bytes";
    } catch (const OutOfMemory& error) {
      EXPECT_EQ(error.bytes_needed(), size);
    }
  }
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
}

TEST_F(EngineTest, PauseAndResumeRefuseWhileTheDriverReportsACaptureOnTheirDevice) {
  const DevicePtr on0 = allocate(kMiB, "graph-time", /*backup=*/true, 0);
  const DevicePtr on1 = allocate(kMiB, "elsewhere", /*backup=*/true, 1);
  testing::fill_pattern(on0, kMiB, 3);
  sim_.set_capturing(0, true);  // another thread captures on a blocking stream of device 0
  const std::size_t synchronizations = sim_.call_count(DriverCall::kSynchronize);
  try {
    engine_->pause("graph-time");
    ADD_FAILURE() << "paused during a capture";
  } catch (const InvalidState& error) {
    EXPECT_NE(std::string(error.what()).find("capture"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("device 0"), std::string::npos) << error.what();
  }
  EXPECT_THROW(engine_->pause(std::nullopt), InvalidState);
  EXPECT_EQ(sim_.call_count(DriverCall::kSynchronize), synchronizations)
      << "nothing the capture would see was done";
  EXPECT_TRUE(testing::has_pattern(on0, kMiB, 3)) << "still active";
  engine_->pause("elsewhere");  // device 1 is not capturing
  engine_->resume("elsewhere");

  sim_.set_capturing(0, false);
  engine_->pause("graph-time");
  sim_.set_capturing(0, true);
  EXPECT_THROW(engine_->resume("graph-time"), InvalidState);
  EXPECT_EQ(sim_.physical_bytes(0), 0u) << "still paused";
  sim_.set_capturing(0, false);
  engine_->resume("graph-time");
  EXPECT_TRUE(testing::has_pattern(on0, kMiB, 3));
  engine_->free(on0);
  engine_->free(on1);
}

TEST_F(EngineTest, DestroyingTheEngineGivesEverythingBack) {
  (void)allocate(2 * kMiB, "a", true);
  (void)allocate(2 * kMiB, "b", true);
  engine_->pause("a");
  engine_.reset();
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  EXPECT_EQ(sim_.host_bytes(), 0u);
  EXPECT_EQ(sim_.live_streams(), 0u);
}

}  // namespace
}  // namespace tms
