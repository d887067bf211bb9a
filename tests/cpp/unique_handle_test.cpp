// The owner template (common/unique_handle.h) and the owners built on it:
// each resource is given back exactly once, moves and release() hand it
// over, and a give-back the driver refuses is parked (VMM owners) or logged
// (copy streams), never thrown.
#include "common/unique_handle.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/copy_stream.h"
#include "common/errors.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "test_support.h"
#include "vmm/parking_lot.h"
#include "vmm/vmm_handles.h"

namespace tms {
namespace {

using testing::kMiB;

/// Records every value it is called with.
struct RecordingDeleter {
  std::vector<int>* given_back = nullptr;
  void operator()(int value) const noexcept { given_back->push_back(value); }
};
using Owner = UniqueHandle<int, RecordingDeleter>;

class UniqueHandleTest : public ::testing::Test {
 protected:
  Owner own(int value) { return Owner(value, RecordingDeleter{&given_back}); }
  std::vector<int> given_back;
};

TEST_F(UniqueHandleTest, GivesItsValueBackOnceWhenDestroyed) {
  {
    const Owner owner = own(7);
    EXPECT_TRUE(owner);
    EXPECT_EQ(owner.get(), 7);
    EXPECT_TRUE(given_back.empty());
  }
  EXPECT_EQ(given_back, std::vector<int>{7});
}

TEST_F(UniqueHandleTest, EmptyOwnerGivesNothingBack) {
  { const Owner owner; }
  { const Owner owner = own(0); }  // the empty value
  EXPECT_TRUE(given_back.empty());
}

TEST_F(UniqueHandleTest, MoveHandsTheValueOverAndLeavesTheSourceEmpty) {
  {
    Owner first = own(3);
    Owner second = std::move(first);
    EXPECT_FALSE(first);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_EQ(second.get(), 3);
    Owner third;
    third = std::move(second);
    EXPECT_FALSE(second);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(third.get(), 3);
    EXPECT_TRUE(given_back.empty());
  }
  EXPECT_EQ(given_back, std::vector<int>{3});
}

TEST_F(UniqueHandleTest, MoveAssignmentGivesBackWhatItHeldFirst) {
  Owner target = own(1);
  Owner source = own(2);
  target = std::move(source);
  EXPECT_EQ(given_back, std::vector<int>{1});
  EXPECT_EQ(target.get(), 2);
  auto& self = target;
  target = std::move(self);
  EXPECT_EQ(target.get(), 2) << "self-move keeps the value";
  EXPECT_EQ(given_back, std::vector<int>{1});
}

TEST_F(UniqueHandleTest, ReleaseHandsTheValueToTheCaller) {
  {
    Owner owner = own(5);
    EXPECT_EQ(owner.release(), 5);
    EXPECT_FALSE(owner);
  }
  EXPECT_TRUE(given_back.empty());
}

TEST_F(UniqueHandleTest, ResetGivesBackNowAndOnlyOnce) {
  Owner owner = own(9);
  owner.reset();
  EXPECT_FALSE(owner);
  owner.reset();
  EXPECT_EQ(given_back, std::vector<int>{9});
}

// ---- the VMM owners: failures park ------------------------------------------

class VmmOwnersTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kSize = 2 * kMiB;
  testing::FaultySim sim;
  ParkingLot parking{sim};
};

TEST_F(VmmOwnersTest, OwnersGiveEverythingBack) {
  {
    const VaReservation range = VaReservation::reserve(sim, parking, kSize, kSize);
    const PhysicalMemory memory = PhysicalMemory::create(sim, parking, 0, kSize);
    const Mapping mapping = Mapping::map(sim, parking, range.va(), kSize, memory.handle(), 0);
    EXPECT_EQ(sim.accessible_bytes(), kSize);
    testing::fill_pattern(range.va(), kSize, 1);
  }
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
  EXPECT_EQ(parking.size(), 0u);
}

TEST_F(VmmOwnersTest, AFailedGiveBackIsParkedNotThrownAndRetriedLater) {
  VaReservation range = VaReservation::reserve(sim, parking, kSize, kSize);
  PhysicalMemory memory = PhysicalMemory::create(sim, parking, 0, kSize);
  Mapping mapping = Mapping::map(sim, parking, range.va(), kSize, memory.handle(), 0);
  sim.fail_call(DriverCall::kUnmap, 1);
  sim.fail_call(DriverCall::kReleasePhysical, 1);
  sim.fail_call(DriverCall::kFreeReservation, 1);
  mapping.reset();
  memory.reset();
  range.reset();
  EXPECT_FALSE(mapping);
  EXPECT_EQ(parking.size(), 3u);
  EXPECT_EQ(sim.reserved_bytes(), kSize) << "nothing given back yet";
  parking.retry();
  EXPECT_EQ(parking.size(), 0u);
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

TEST_F(VmmOwnersTest, MapThatCannotGrantAccessLeavesNothingMapped) {
  const VaReservation range = VaReservation::reserve(sim, parking, kSize, kSize);
  const PhysicalMemory memory = PhysicalMemory::create(sim, parking, 0, kSize);
  sim.fail_call(DriverCall::kSetAccess, 1);
  EXPECT_THROW((void)Mapping::map(sim, parking, range.va(), kSize, memory.handle(), 0),
               DriverError);
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(parking.size(), 0u);
}

TEST_F(VmmOwnersTest, AdoptedResourcesAreGivenBackByTheirOwners) {
  const DevicePtr va = sim.reserve(kSize, kSize);
  const PhysicalHandle handle = sim.create_physical(0, kSize);
  sim.map(va, kSize, handle);
  {
    const VaReservation range = VaReservation::adopt(parking, va, kSize);
    const PhysicalMemory memory = PhysicalMemory::adopt(parking, handle);
    const Mapping mapping = Mapping::adopt(parking, va, kSize);
  }
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

// ---- copy streams: failures are logged ----------------------------------------

TEST(CopyStreamTest, DestroysItsStreamAndSwallowsAFailure) {
  testing::FaultySim sim;
  { const CopyStream stream = CopyStream::create(sim, 0); }
  EXPECT_EQ(sim.live_streams(), 0u);
  CopyStream stream = CopyStream::create(sim, 0);
  sim.fail_call(DriverCall::kDestroyStream, 1);
  EXPECT_NO_THROW(stream.reset());
  EXPECT_FALSE(stream);
}

TEST(CopyStreamTest, APipelineThatCannotMakeEveryLaneKeepsNone) {
  testing::FaultySim sim;
  CopyPipeline copies(sim, {.chunk_bytes = kMiB, .streams_per_device = 3});
  sim.fail_call(DriverCall::kCreateStream, 3);
  EXPECT_THROW(copies.wait(0, 0), DriverError);
  EXPECT_EQ(sim.live_streams(), 0u) << "the two lanes made are destroyed";
  copies.wait(0, 0);
  EXPECT_EQ(sim.live_streams(), 3u);
}

// ---- engine teardown through the owners -------------------------------------

TEST(EngineTeardownTest, AGiveBackThatFailsAtTeardownIsRetried) {
  testing::FaultySim sim;
  {
    Engine engine(sim);
    (void)engine.allocate({2 * kMiB, 0, "t", {}});
    sim.fail_call(DriverCall::kUnmap, 1);  // the unmap at teardown
  }
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

}  // namespace
}  // namespace tms
