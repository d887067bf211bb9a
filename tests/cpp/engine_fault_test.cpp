// Every driver call and every file operation (disk backup) an operation
// makes is made to fail once, in turn. The
// operation must either report the error and leave everything as it was
// (state, contents, backups, device and host accounting), after which a
// retry succeeds; or, for a failure at its point of no return (giving a
// resource back), complete and give the parked resource back on the next
// operation.
#include <gtest/gtest.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "backup/file_io.h"
#include "common/errors.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

struct Tracked {
  DevicePtr ptr;
  std::size_t size;
  std::uint8_t seed;
  bool backup;  // the contents survive a pause (host or disk backup)
  bool disk;
};

/// Everything a failed operation must leave as it was, comparable across
/// worlds (file names hold addresses, which differ between worlds).
struct WorldSnapshot {
  testing::SimSnapshot sim;
  std::size_t files;
  bool operator==(const WorldSnapshot&) const = default;
};

/// A sim driver and an engine holding a mix of allocations on two devices,
/// with host backups, disk backups (through fault-injectable file I/O) and
/// none.
struct World {
  testing::TempDir dir;
  FaultyFileIo io;
  SimDriver sim{[] {
    SimDriverOptions options;
    options.device_count = 2;
    options.capacity_bytes = 64 * kMiB;
    return options;
  }()};
  std::unique_ptr<Engine> engine = [this] {
    EngineOptions options;
    options.disk.chunk_bytes = kMiB;  // several chunks per file
    options.file_io = &io;
    // Host memory registered in several chunks by worker threads, and
    // copies split into several pieces on two lanes.
    options.host.register_chunk_bytes = kMiB;
    options.host.prepare_threads = 3;
    options.host.small_request_bytes = 3 * kMiB;
    options.copies.chunk_bytes = 768 * 1024;
    auto made = std::make_unique<Engine>(sim, options);
    made->set_disk_backup_dir(dir.path());
    return made;
  }();
  std::vector<Tracked> tracked;

  World() {
    // Warm up so the per-device copy streams and the disk staging buffer
    // exist before any measurement.
    for (int device : {0, 1}) {
      const DevicePtr warm = add("warm", 2 * kMiB, true, device, 0, device == 1);
      engine->pause("warm");
      engine->resume("warm");
      engine->free(warm);
      tracked.clear();
    }
    add("weights", 3 * kMiB + 5, true, 0, 11);
    add("weights", 2 * kMiB, true, 1, 12);
    add("kv", 4 * kMiB, false, 0, 13);
    add("kv", 1 * kMiB, false, 1, 14);
    add("weights", 3 * kMiB + 7, true, 1, 15, /*disk=*/true);
    add("kv", 2 * kMiB, true, 0, 16, /*disk=*/true);
  }

  DevicePtr add(const std::string& tag, std::size_t size, bool backup, int device,
                std::uint8_t seed, bool disk = false) {
    AllocationRequest request;
    request.size = size;
    request.device = device;
    request.tag = tag;
    request.policy.cpu_backup = backup && !disk;
    request.policy.disk_backup = disk;
    const DevicePtr ptr = engine->allocate(request);
    testing::fill_pattern(ptr, size, seed);
    tracked.push_back({ptr, size, seed, backup, disk});
    return ptr;
  }

  [[nodiscard]] const Tracked& first_disk() const {
    for (const Tracked& t : tracked) {
      if (t.disk) return t;
    }
    throw std::logic_error("no disk-backed allocation");
  }

  /// Contents of backed-up allocations are exact wherever they are now (on
  /// the device, in the host backup or in the backup file), and the others
  /// are intact while active.
  [[nodiscard]] bool contents_intact(bool expect_paused, bool only_backed_up = false) const {
    for (const Tracked& t : tracked) {
      if (!engine->owns(t.ptr) || (only_backed_up && !t.backup)) continue;
      if (!expect_paused) {
        if (!testing::has_pattern(t.ptr, t.size, t.seed)) return false;
      } else if (t.disk) {
        // Backup files have no name: their contents are checked by the
        // resume after the retry; here, that each paused one still has its file.
        if (testing::backup_fds(dir.path()).empty()) return false;
      } else if (t.backup) {
        const std::uint8_t* backup = engine->backup_pointer(t.ptr, t.size);
        if (backup == nullptr ||
            !testing::has_pattern(reinterpret_cast<std::uintptr_t>(backup), t.size, t.seed)) {
          return false;
        }
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

  [[nodiscard]] WorldSnapshot snapshot() const {
    // Backup files: the unnamed ones this process holds, and any names.
    return {testing::snapshot(sim), testing::backup_fds(dir.path()).size() + dir.files().size()};
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
      {"allocate_disk", [](World&) {},
       [](World& w) { w.add("extra", 5 * kMiB, true, 1, 22, /*disk=*/true); }, false},
      {"pause_all", [](World&) {}, [](World& w) { w.engine->pause(std::nullopt); }, false},
      {"pause_one_tag", [](World&) {}, [](World& w) { w.engine->pause("weights"); }, false},
      {"resume_all", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->resume(std::nullopt); }, true},
      {"resume_one_tag", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->resume("weights"); }, true},
      {"free_active", [](World&) {}, [](World& w) { w.engine->free(w.tracked[0].ptr); }, false},
      {"free_paused", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->free(w.tracked[0].ptr); }, true},
      {"free_paused_disk", [](World& w) { w.engine->pause(std::nullopt); },
       [](World& w) { w.engine->free(w.first_disk().ptr); }, true},
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

/// One family of injectable failures: the simulated driver's calls or the
/// disk backup's file operations.
struct FaultFamily {
  std::size_t kinds;
  std::function<std::string(std::size_t kind)> name;
  std::function<std::size_t(const World&, std::size_t kind)> calls;
  std::vector<int> variants;  // a SimFailure or an errno value
  std::function<void(World&, std::size_t kind, int nth, int variant)> inject;
  std::function<void(World&)> clear;
  /// Giving a resource back: past the point of no return, so a failure must
  /// not fail the operation.
  std::function<bool(std::size_t kind)> releases;
};

FaultFamily driver_faults() {
  return {
      static_cast<std::size_t>(SimCall::kCount),
      [](std::size_t kind) { return std::string(sim_call_name(static_cast<SimCall>(kind))); },
      [](const World& w, std::size_t kind) { return w.sim.call_count(static_cast<SimCall>(kind)); },
      {static_cast<int>(SimFailure::kDriverError), static_cast<int>(SimFailure::kOutOfMemory)},
      [](World& w, std::size_t kind, int nth, int variant) {
        w.sim.fail_call(static_cast<SimCall>(kind), nth, static_cast<SimFailure>(variant));
      },
      [](World& w) { w.sim.clear_failures(); },
      [](std::size_t kind) {
        const auto call = static_cast<SimCall>(kind);
        return call == SimCall::kReleasePhysical || call == SimCall::kFreeReservation ||
               call == SimCall::kHostFree || call == SimCall::kHostUnregister;
      },
  };
}

FaultFamily file_faults() {
  return {
      static_cast<std::size_t>(FileCall::kCount),
      [](std::size_t kind) { return std::string(file_call_name(static_cast<FileCall>(kind))); },
      [](const World& w, std::size_t kind) { return w.io.call_count(static_cast<FileCall>(kind)); },
      {EIO, ENOSPC},
      [](World& w, std::size_t kind, int nth, int variant) {
        w.io.fail_call(static_cast<FileCall>(kind), nth, variant);
      },
      [](World& w) { w.io.clear_failures(); },
      [](std::size_t kind) {
        const auto call = static_cast<FileCall>(kind);
        return call == FileCall::kClose || call == FileCall::kUnlink;
      },
  };
}

/// Makes every call of `family` that `scenario`'s operation makes fail once
/// in turn, and checks all-or-nothing. Returns how many failures it injected.
std::size_t sweep(const Scenario& scenario, const FaultFamily& family) {
  // Reference run: how many calls of each kind the operation makes, and the
  // accounting it ends with.
  std::vector<std::size_t> calls(family.kinds);
  WorldSnapshot reference_after{};
  {
    World world;
    scenario.setup(world);
    std::vector<std::size_t> before(calls.size());
    for (std::size_t c = 0; c < calls.size(); ++c) before[c] = family.calls(world, c);
    scenario.operation(world);
    for (std::size_t c = 0; c < calls.size(); ++c) calls[c] = family.calls(world, c) - before[c];
    reference_after = world.snapshot();
  }

  std::size_t injected = 0;
  for (std::size_t c = 0; c < calls.size(); ++c) {
    for (std::size_t nth = 1; nth <= calls[c]; ++nth) {
      for (const int variant : family.variants) {
        SCOPED_TRACE(scenario.name + ": " + family.name(c) + " #" + std::to_string(nth) +
                     " (variant " + std::to_string(variant) + ")");
        World world;
        scenario.setup(world);
        const WorldSnapshot before = world.snapshot();
        const std::set<std::string> files_before = world.dir.files();
        const std::vector<std::size_t> state_before = world.state_bytes();
        family.inject(world, c, static_cast<int>(nth), variant);
        ++injected;

        bool failed = false;
        try {
          scenario.operation(world);
        } catch (const Error& error) {
          failed = true;
          EXPECT_NE(std::string(error.what()).find(family.name(c)), std::string::npos)
              << "the error names the failing call: " << error.what();
        }
        if (failed) {
          EXPECT_FALSE(family.releases(c)) << "giving back must not fail the operation";
          EXPECT_EQ(world.snapshot(), before) << "accounting changed";
          EXPECT_EQ(world.dir.files(), files_before) << "backup files changed";
          EXPECT_EQ(world.state_bytes(), state_before) << "allocation state changed";
          EXPECT_TRUE(world.contents_intact(scenario.starts_paused));
          family.clear(world);
          EXPECT_NO_THROW(scenario.operation(world)) << "retry after the failure";
        } else {
          EXPECT_TRUE(family.releases(c)) << "the injected failure was swallowed";
          world.engine->pause("no-such-tag");  // any operation retries parked releases
          EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
        }
        EXPECT_EQ(world.snapshot(), reference_after) << "end state differs";
        if (!scenario.starts_paused) {
          world.engine->resume(std::nullopt);
          EXPECT_TRUE(world.contents_intact(false, true)) << "backed-up contents after the retry";
        }
        world.engine.reset();
        EXPECT_TRUE(world.dir.files().empty()) << "teardown removes every backup file";
        EXPECT_TRUE(testing::backup_fds(world.dir.path()).empty()) << "and closes them";
        if (::testing::Test::HasFailure()) return injected;
      }
    }
  }
  return injected;
}

class FaultSweep : public ::testing::TestWithParam<std::size_t> {};

TEST_P(FaultSweep, EveryDriverCallFailingOnceLeavesNothingBehind) {
  EXPECT_GE(sweep(scenarios()[GetParam()], driver_faults()), 2u)
      << "the sweep must have covered some calls";
}

TEST_P(FaultSweep, EveryFileOperationFailingOnceLeavesNothingBehind) {
  const Scenario scenario = scenarios()[GetParam()];
  const std::size_t injected = sweep(scenario, file_faults());
  // Every scenario except these touches a backup file.
  if (scenario.name != "allocate" && scenario.name != "free_active" &&
      scenario.name != "free_paused" && scenario.name != "pause_retained") {
    EXPECT_GT(injected, 0u) << "the sweep must have covered some file operations";
  }
}

INSTANTIATE_TEST_SUITE_P(Operations, FaultSweep, ::testing::Range<std::size_t>(0, 10),
                         [](const ::testing::TestParamInfo<std::size_t>& param_info) {
                           return scenarios()[param_info.param].name;
                         });

}  // namespace
}  // namespace tms
