#include "driver/sim_driver.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

SimDriver make_sim(int devices = 2, std::size_t capacity = 64 * kMiB) {
  return SimDriver({.device_count = devices, .capacity_bytes = capacity});
}

TEST(SimDriver, MappedMemoryIsWritableAndUnmappedMemoryFaults) {
  SimDriver sim = make_sim();
  const std::size_t size = 2 * kMiB;
  const DevicePtr va = sim.reserve(size, 0);
  const PhysicalHandle handle = sim.create_physical(0, size);
  sim.map(va, size, handle);
  sim.set_access(va, size, 0);
  testing::fill_pattern(va, size, 7);
  EXPECT_TRUE(testing::has_pattern(va, size, 7));
  sim.unmap(va, size);
  EXPECT_TRUE(testing::faults_when_touched([&] { *reinterpret_cast<volatile char*>(va) = 1; }));
  sim.release_physical(handle);
  sim.free_reservation(va, size);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
}

TEST(SimDriver, FreshPhysicalMemoryReadsZero) {
  SimDriver sim = make_sim();
  const std::size_t size = 2 * kMiB;
  const DevicePtr va = sim.reserve(size, 0);
  PhysicalHandle handle = sim.create_physical(0, size);
  sim.map(va, size, handle);
  sim.set_access(va, size, 0);
  testing::fill_pattern(va, size, 3);
  sim.unmap(va, size);
  sim.release_physical(handle);
  handle = sim.create_physical(0, size);
  sim.map(va, size, handle);
  sim.set_access(va, size, 0);
  EXPECT_TRUE(testing::all_zero(va, size));
  sim.unmap(va, size);
  sim.release_physical(handle);
  sim.free_reservation(va, size);
}

TEST(SimDriver, CapacityIsPerDeviceAndReportedAsOutOfMemory) {
  SimDriver sim = make_sim(2, 4 * kMiB);
  const PhysicalHandle a = sim.create_physical(0, 4 * kMiB);
  EXPECT_EQ(sim.memory_info(0).free_bytes, 0u);
  EXPECT_EQ(sim.memory_info(1).free_bytes, 4 * kMiB);
  try {
    (void)sim.create_physical(0, 2 * kMiB);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    EXPECT_EQ(error.bytes_needed(), 2 * kMiB);
    EXPECT_EQ(error.bytes_free(), 0u);
  }
  const PhysicalHandle b = sim.create_physical(1, 2 * kMiB);
  sim.release_physical(a);
  sim.release_physical(b);
}

// A range larger than the process's address space (2^60 bytes: above any
// Linux user space, 47 to 56 bits), or one that with its alignment exceeds
// size_t, is out of memory naming its size and the address space, as
// cuMemAddressReserve's CUDA_ERROR_OUT_OF_MEMORY is; nothing stays reserved.
TEST(SimDriver, ReservationBeyondTheAddressSpaceIsOutOfMemory) {
  SimDriver sim = make_sim();
  const std::size_t granularity = sim.granularity(0);
  for (const std::size_t size : {std::size_t{1} << 60, SIZE_MAX - granularity + 1}) {
    try {
      (void)sim.reserve(size, 0);
      FAIL() << "reserving " << size << " bytes succeeded";
    } catch (const OutOfMemory& error) {
      EXPECT_EQ(error.status(), TMS_ERROR_OUT_OF_MEMORY);
      EXPECT_EQ(error.bytes_needed(), size);
      const std::string message = error.what();
      EXPECT_NE(message.find(std::to_string(size)), std::string::npos) << message;
      EXPECT_NE(message.find("address space"), std::string::npos) << message;
    }
  }
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

TEST(SimDriver, CapacityLoweredBelowWhatIsInUseReportsNothingFree) {
  SimDriver sim = make_sim(1, 8 * kMiB);
  const PhysicalHandle a = sim.create_physical(0, 6 * kMiB);
  sim.set_capacity(2 * kMiB);
  try {
    (void)sim.create_physical(0, 2 * kMiB);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    EXPECT_EQ(error.bytes_free(), 0u) << "not a wrapped-around huge number";
    EXPECT_NE(std::string(error.what()).find("has 0 bytes"), std::string::npos) << error.what();
  }
  sim.release_physical(a);
}

TEST(SimDriver, HostMemoryGoesBackInPageAlignedPieces) {
  SimDriver sim = make_sim();
  constexpr std::size_t kPage = 4096;
  auto* block = static_cast<std::uint8_t*>(sim.host_alloc(8 * kPage));
  sim.host_free(block + 2 * kPage, 3 * kPage);  // from the middle
  EXPECT_EQ(sim.host_bytes(), 5 * kPage);
  EXPECT_TRUE(testing::faults_when_touched([&] { block[2 * kPage] = 1; }));
  block[kPage] = 1;  // the rest is still there
  block[5 * kPage] = 1;
  EXPECT_THROW(sim.host_free(block + 2 * kPage, kPage), DriverError) << "already given back";
  EXPECT_THROW(sim.host_free(block + 4 * kPage, 2 * kPage), DriverError) << "runs past the piece";
  EXPECT_THROW(sim.host_free(block + 100, kPage), DriverError) << "not page-aligned";
  sim.host_free(block, 2 * kPage);
  sim.host_free(block + 5 * kPage, 3 * kPage);
  EXPECT_EQ(sim.host_bytes(), 0u);
}

TEST(SimDriver, RejectsUnknownDevicesAndHandles) {
  SimDriver sim = make_sim(1);
  EXPECT_THROW((void)sim.create_physical(1, 2 * kMiB), DriverError);
  EXPECT_THROW(sim.release_physical(12345), DriverError);
}

// Before/after comparisons of the tests work on any number of devices.
TEST(SimDriver, SnapshotCoversEveryDevice) {
  for (const int devices : {1, 2}) {
    SimDriver sim = make_sim(devices);
    const testing::SimSnapshot before = testing::snapshot(sim);
    EXPECT_EQ(before.physical.size(), static_cast<std::size_t>(devices));
    const PhysicalHandle handle = sim.create_physical(devices - 1, 2 * kMiB);
    EXPECT_NE(testing::snapshot(sim), before);
    sim.release_physical(handle);
    EXPECT_EQ(testing::snapshot(sim), before);
  }
}

}  // namespace
}  // namespace tms
