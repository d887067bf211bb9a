// Every driver call an operation makes is made to fail once, in turn. The
// operation must either report the error and leave everything as it was
// (state, contents, backups, device and host accounting), after which a
// retry succeeds; or, for a failure at its point of no return (giving a
// resource back), complete and give the parked resource back on the next
// operation.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"
#include "core/engine.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

struct Tracked {
  DevicePtr ptr;
  std::size_t size;
  std::uint8_t seed;
  bool backup;
};

/// A sim driver and an engine holding a mix of allocations on two devices.
struct World {
  SimDriver sim{[] {
    SimDriverOptions options;
    options.device_count = 2;
    options.capacity_bytes = 64 * kMiB;
    return options;
  }()};
  std::unique_ptr<Engine> engine = std::make_unique<Engine>(sim);
  std::vector<Tracked> tracked;

  World() {
    // Warm up so the per-device copy streams exist before any measurement.
    for (int device : {0, 1}) {
      const DevicePtr warm = add("warm", 2 * kMiB, true, device, 0);
      engine->pause("warm");
      engine->resume("warm");
      engine->free(warm);
      tracked.clear();
    }
    add("weights", 3 * kMiB + 5, true, 0, 11);
    add("weights", 2 * kMiB, true, 1, 12);
    add("kv", 4 * kMiB, false, 0, 13);
    add("kv", 1 * kMiB, false, 1, 14);
  }

  DevicePtr add(const std::string& tag, std::size_t size, bool backup, int device,
                std::uint8_t seed) {
    AllocationRequest request;
    request.size = size;
    request.device = device;
    request.tag = tag;
    request.policy.cpu_backup = backup;
    const DevicePtr ptr = engine->allocate(request);
    testing::fill_pattern(ptr, size, seed);
    tracked.push_back({ptr, size, seed, backup});
    return ptr;
  }

  /// Contents of backed-up allocations are exact wherever they are now (on
  /// the device or in the backup), and the others are intact while active.
  [[nodiscard]] bool contents_intact(bool expect_paused, bool only_backed_up = false) const {
    for (const Tracked& t : tracked) {
      if (!engine->owns(t.ptr) || (only_backed_up && !t.backup)) continue;
      const std::uint8_t* backup = engine->backup_pointer(t.ptr, t.size);
      if (expect_paused) {
        if (t.backup &&
            (backup == nullptr ||
             !testing::has_pattern(reinterpret_cast<std::uintptr_t>(backup), t.size, t.seed))) {
          return false;
        }
      } else if (!testing::has_pattern(t.ptr, t.size, t.seed)) {
        return false;
      }
    }
    return true;
  }

  [[nodiscard]] std::vector<std::size_t> state_bytes() const {
    std::vector<std::size_t> bytes;
    for (const TagDeviceStats& entry : engine->stats().entries) {
      bytes.push_back(entry.allocations);
      bytes.push_back(entry.active_bytes);
      bytes.push_back(entry.paused_bytes);
      bytes.push_back(entry.backup_bytes);
    }
    return bytes;
  }
};

struct Scenario {
  std::string name;
  std::function<void(World&)> setup;      // brings the world to the starting state
  std::function<void(World&)> operation;  // the operation under test
  bool starts_paused;
};

std::vector<Scenario> scenarios() {
  return {
      {"allocate", [](World&) {}, [](World& w) { w.add("extra", 5 * kMiB, true, 1, 21); }, false},
      {"pause_all", [](World&) {}, [](World& w) { w.engine->pause(std::nullopt); }, false},
      {"pause_one_tag", [](World&) {}, [](World& w) { w.engine->pause("weights"); }, false},
      {"resume_all", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->resume(std::nullopt); }, true},
      {"free_active", [](World&) {}, [](World& w) { w.engine->free(w.tracked[0].ptr); }, false},
      {"free_paused", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->free(w.tracked[0].ptr); }, true},
      {"pause_retained",
       [](World& w) {
         w.engine->set_retain_cpu_backup(true);
         w.engine->pause(std::nullopt);
         w.engine->resume(std::nullopt);
         for (const Tracked& t : w.tracked) testing::fill_pattern(t.ptr, t.size, t.seed);
       },
       [](World& w) { w.engine->pause(std::nullopt); }, false},
  };
}

bool releases_a_resource(SimCall call) {
  return call == SimCall::kReleasePhysical || call == SimCall::kFreeReservation ||
         call == SimCall::kHostFree;
}

class FaultSweep : public ::testing::TestWithParam<std::size_t> {};

TEST_P(FaultSweep, EveryDriverCallFailingOnceLeavesNothingBehind) {
  const Scenario scenario = scenarios()[GetParam()];

  // Reference run: how many calls of each kind the operation makes, and the
  // accounting it ends with.
  std::vector<std::size_t> calls(static_cast<std::size_t>(SimCall::kCount));
  testing::SimSnapshot reference_after{};
  {
    World world;
    scenario.setup(world);
    std::vector<std::size_t> before(calls.size());
    for (std::size_t c = 0; c < calls.size(); ++c) before[c] = world.sim.call_count(SimCall(c));
    scenario.operation(world);
    for (std::size_t c = 0; c < calls.size(); ++c) {
      calls[c] = world.sim.call_count(SimCall(c)) - before[c];
    }
    reference_after = testing::snapshot(world.sim);
  }

  std::size_t injected = 0;
  for (std::size_t c = 0; c < calls.size(); ++c) {
    const auto call = static_cast<SimCall>(c);
    for (std::size_t nth = 1; nth <= calls[c]; ++nth) {
      for (const SimFailure failure : {SimFailure::kDriverError, SimFailure::kOutOfMemory}) {
        SCOPED_TRACE(scenario.name + ": " + std::string(sim_call_name(call)) + " #" +
                     std::to_string(nth) +
                     (failure == SimFailure::kOutOfMemory ? " (out of memory)" : ""));
        World world;
        scenario.setup(world);
        const testing::SimSnapshot before = testing::snapshot(world.sim);
        const std::vector<std::size_t> state_before = world.state_bytes();
        world.sim.fail_call(call, static_cast<int>(nth), failure);
        ++injected;

        bool failed = false;
        try {
          scenario.operation(world);
        } catch (const Error& error) {
          failed = true;
          EXPECT_NE(std::string(error.what()).find(sim_call_name(call)), std::string::npos)
              << "the error names the failing call: " << error.what();
        }
        if (failed) {
          EXPECT_FALSE(releases_a_resource(call)) << "giving back must not fail the operation";
          EXPECT_EQ(testing::snapshot(world.sim), before) << "accounting changed";
          EXPECT_EQ(world.state_bytes(), state_before) << "allocation state changed";
          EXPECT_TRUE(world.contents_intact(scenario.starts_paused));
          world.sim.clear_failures();
          ASSERT_NO_THROW(scenario.operation(world)) << "retry after the failure";
        } else {
          EXPECT_TRUE(releases_a_resource(call)) << "the injected failure was swallowed";
          world.engine->pause("no-such-tag");  // any operation retries parked releases
          EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
        }
        EXPECT_EQ(testing::snapshot(world.sim), reference_after) << "end state differs";
        if (!scenario.starts_paused) {
          world.engine->resume(std::nullopt);
          EXPECT_TRUE(world.contents_intact(false, true)) << "backed-up contents after the retry";
        }
      }
    }
  }
  EXPECT_GT(injected, 2u) << "the sweep must have covered some calls";
}

INSTANTIATE_TEST_SUITE_P(Operations, FaultSweep, ::testing::Range<std::size_t>(0, 7),
                         [](const ::testing::TestParamInfo<std::size_t>& param_info) {
                           return scenarios()[param_info.param].name;
                         });

}  // namespace
}  // namespace tms
