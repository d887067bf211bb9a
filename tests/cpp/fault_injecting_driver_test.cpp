#include "driver/fault_injecting_driver.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "common/errors.h"

namespace tms {
namespace {

/// A driver that is not the simulation: every call succeeds at once and is
/// counted, so a test sees which calls reached it.
class CountingFake final : public Driver {
 public:
  [[nodiscard]] std::string_view name() const override { return "fake"; }
  int device_count() override { return 1; }
  int current_device() override { return 0; }
  std::size_t granularity(int) override { return 4096; }
  DeviceMemoryInfo memory_info(int) override { return {1, 2}; }
  void synchronize(int) override { ++reached; }
  bool capture_underway(int) override { return ++reached, false; }
  DevicePtr reserve(std::size_t, std::size_t) override { return ++reached, 0x1000; }
  void free_reservation(DevicePtr, std::size_t) override { ++reached; }
  PhysicalHandle create_physical(int, std::size_t) override { return ++reached, 7; }
  void release_physical(PhysicalHandle) override { ++reached; }
  void map(DevicePtr, std::size_t, PhysicalHandle) override { ++reached; }
  void unmap(DevicePtr, std::size_t) override { ++reached; }
  void set_access(DevicePtr, std::size_t, int) override { ++reached; }
  void* host_alloc(std::size_t) override { return ++reached, this; }
  void host_free(void*, std::size_t) override { ++reached; }
  void host_register(void*, std::size_t) override { ++reached; }
  void host_unregister(void*) override { ++reached; }
  StreamHandle create_stream(int) override { return ++reached, this; }
  void destroy_stream(int, StreamHandle) override { ++reached; }
  void copy_to_host_async(int, void*, DevicePtr, std::size_t, StreamHandle) override { ++reached; }
  void copy_to_device_async(int, DevicePtr, const void*, std::size_t, StreamHandle) override {
    ++reached;
  }
  void synchronize_stream(int, StreamHandle) override { ++reached; }
  EventHandle create_event(int) override { return ++reached, this; }
  void destroy_event(int, EventHandle) override { ++reached; }
  void record_event(int, EventHandle, StreamHandle) override { ++reached; }
  void synchronize_event(int, EventHandle) override { ++reached; }
  void stream_wait_event(int, StreamHandle, EventHandle) override { ++reached; }
  void codec_measure_async(int, DevicePtr, std::size_t, DevicePtr, StreamHandle) override {
    ++reached;
  }
  void codec_encode_async(int, DevicePtr, std::size_t, DevicePtr, DevicePtr,
                          StreamHandle) override {
    ++reached;
  }
  void codec_decode_async(int, DevicePtr, DevicePtr, std::size_t, StreamHandle) override {
    ++reached;
  }

  int reached = 0;  // calls that got here
};

/// One call of each kind through `driver`, in DriverCall order.
std::vector<std::function<void(Driver&)>> one_call_of_each_kind() {
  return {
      [](Driver& d) { (void)d.reserve(4096, 0); },
      [](Driver& d) { d.free_reservation(0x1000, 4096); },
      [](Driver& d) { (void)d.create_physical(0, 4096); },
      [](Driver& d) { d.release_physical(7); },
      [](Driver& d) { d.map(0x1000, 4096, 7); },
      [](Driver& d) { d.unmap(0x1000, 4096); },
      [](Driver& d) { d.set_access(0x1000, 4096, 0); },
      [](Driver& d) { (void)d.host_alloc(4096); },
      [](Driver& d) { d.host_free(nullptr, 4096); },
      [](Driver& d) { d.host_register(nullptr, 4096); },
      [](Driver& d) { d.host_unregister(nullptr); },
      [](Driver& d) { d.copy_to_host_async(0, nullptr, 0x1000, 1, nullptr); },
      [](Driver& d) { d.copy_to_device_async(0, 0x1000, nullptr, 1, nullptr); },
      [](Driver& d) { d.synchronize(0); },
      [](Driver& d) { (void)d.create_stream(0); },
      [](Driver& d) { d.destroy_stream(0, nullptr); },
      [](Driver& d) { d.synchronize_stream(0, nullptr); },
      [](Driver& d) { (void)d.create_event(0); },
      [](Driver& d) { d.destroy_event(0, nullptr); },
      [](Driver& d) { d.record_event(0, nullptr, nullptr); },
      [](Driver& d) { d.synchronize_event(0, nullptr); },
      [](Driver& d) { d.stream_wait_event(0, nullptr, nullptr); },
      [](Driver& d) { (void)d.capture_underway(0); },
      [](Driver& d) { d.codec_decode_async(0, 0x1000, 0x2000, 1, nullptr); },
  };
}

TEST(FaultInjectingDriver, FailsTheNthCallOfEachKindOverADriverThatIsNotTheSimulation) {
  const auto calls = one_call_of_each_kind();
  ASSERT_EQ(calls.size(), static_cast<std::size_t>(DriverCall::kCount));
  for (std::size_t kind = 0; kind < calls.size(); ++kind) {
    const auto call = static_cast<DriverCall>(kind);
    SCOPED_TRACE(std::string(driver_call_name(call)));
    CountingFake fake;
    FaultInjectingDriver faults(fake);
    faults.fail_call(call, 2, InjectedFailure::kOutOfMemory);
    faults.fail_call(call, 3);
    calls[kind](faults);
    EXPECT_THROW(calls[kind](faults), OutOfMemory);
    try {
      calls[kind](faults);
      ADD_FAILURE() << "the third call passed";
    } catch (const DriverError& error) {
      EXPECT_NE(std::string(error.what()).find("fake." + std::string(driver_call_name(call))),
                std::string::npos)
          << "named like the target's own errors: " << error.what();
    }
    calls[kind](faults);
    EXPECT_EQ(fake.reached, 2) << "the failed calls never reached the target";
    EXPECT_EQ(faults.call_count(call), 4u);
    EXPECT_EQ(faults.call_count_at_last_failure(call), 3u);
  }
}

TEST(FaultInjectingDriver, QueriesPassUncountedAndClearedFailuresNeverFire) {
  CountingFake fake;
  FaultInjectingDriver faults(fake);
  EXPECT_EQ(faults.name(), "fake");
  EXPECT_EQ(faults.granularity(0), 4096u);
  EXPECT_EQ(faults.memory_info(0).total_bytes, 2u);
  faults.fail_call(DriverCall::kMap, 1);
  faults.clear_failures();
  faults.map(0x1000, 4096, 7);
  EXPECT_EQ(fake.reached, 1);
  EXPECT_EQ(faults.call_count_at_last_failure(DriverCall::kMap), 0u) << "none fired";
  EXPECT_THROW(faults.fail_call(DriverCall::kMap, 0), InvalidArgument);
}

TEST(FaultInjectingDriver, CallNamesRoundTrip) {
  for (std::size_t i = 0; i < static_cast<std::size_t>(DriverCall::kCount); ++i) {
    const auto call = static_cast<DriverCall>(i);
    EXPECT_EQ(parse_driver_call(driver_call_name(call)), call);
  }
  EXPECT_THROW((void)parse_driver_call("no_such_call"), InvalidArgument);
}

// C users learn the names tms_sim_fail_call takes from tms_testing.h alone.
TEST(FaultInjectingDriver, TheCHeaderNamesEveryCallThatCanFail) {
  std::ifstream file(TMS_SOURCE_DIR "/include/torch_memory_saver/tms_testing.h");
  ASSERT_TRUE(file) << "tms_testing.h not found under " TMS_SOURCE_DIR;
  const std::string header{std::istreambuf_iterator<char>(file), {}};
  const std::size_t begin = header.find("Call names:");
  const std::size_t end = header.find("*/", begin);
  ASSERT_NE(begin, std::string::npos);
  const std::string comment = header.substr(begin, end - begin);
  std::vector<std::string> documented;
  const std::regex quoted("\"([a-z_]+)\"");
  for (auto it = std::sregex_iterator(comment.begin(), comment.end(), quoted);
       it != std::sregex_iterator(); ++it) {
    documented.push_back((*it)[1]);
  }
  std::vector<std::string> calls;
  for (std::size_t i = 0; i < static_cast<std::size_t>(DriverCall::kCount); ++i) {
    calls.emplace_back(driver_call_name(static_cast<DriverCall>(i)));
  }
  EXPECT_EQ(documented, calls);
}

}  // namespace
}  // namespace tms
