// Every driver call and every file operation (disk backup) an operation
// makes is made to fail once, in turn; then every pair of driver failures in
// which the second hits the operation while it undoes the first. The
// operation must either report the error and leave everything as it was
// (state, contents, backups, device and host accounting), after which a
// retry succeeds; or, for a failure at its point of no return (giving a
// resource back), complete and give the parked resource back on the next
// operation. A pause whose undoing fails too may leave allocations broken
// (never claiming to be active over an unusable range); the next operation
// once the driver works again repairs them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/errors.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "faulty_file_io.h"
#include "faulty_sim.h"
#include "io/file_io.h"
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
  testing::FaultySim sim{{.device_count = 2, .capacity_bytes = 64 * kMiB}};
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
    // Resume maps in batches of two while the previous batch copies.
    options.resume.batch_allocations = 2;
    auto made = std::make_unique<Engine>(sim, options);
    made->set_disk_backup_dir(dir.path());
    return made;
  }();
  std::vector<Tracked> tracked;

  World() {
    // Warm up so the per-device copy streams and the disk staging buffer
    // (at its largest: a slot per transfer in flight, plus one) exist before
    // any measurement.
    for (int device : {0, 1}) {
      const DevicePtr warm =
          add("warm", device == 1 ? 6 * kMiB : 2 * kMiB, true, device, 0, device == 1);
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
    const DevicePtr ptr = engine->allocate(testing::request(
        size, device, tag, disk ? testing::disk_backup() : testing::backup_if(backup)));
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
    // Backup files: the unnamed ones this process holds (once the closes
    // handed to the background are done), and any names.
    if (engine) engine->drain_host_releases();
    return {testing::snapshot(sim), testing::backup_fds(dir.path()).size() + dir.files().size()};
  }

  /// Bytes the engine reports active: each of them must be accessible (no
  /// record claims to be usable when it is not).
  [[nodiscard]] std::size_t active_bytes() const {
    std::size_t active = 0;
    for (const TagDeviceStats& entry : engine->stats().entries) active += entry.active_bytes;
    return active;
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
  std::vector<int> variants;  // a InjectedFailure or an errno value
  std::function<void(World&, std::size_t kind, int nth, int variant)> inject;
  std::function<void(World&)> clear;
  /// Giving a resource back: past the point of no return, so a failure must
  /// not fail the operation.
  std::function<bool(std::size_t kind)> releases;
};

FaultFamily driver_faults() {
  return {
      static_cast<std::size_t>(DriverCall::kCount),
      [](std::size_t kind) { return std::string(driver_call_name(static_cast<DriverCall>(kind))); },
      [](const World& w, std::size_t kind) {
        return w.sim.call_count(static_cast<DriverCall>(kind));
      },
      {static_cast<int>(InjectedFailure::kDriverError),
       static_cast<int>(InjectedFailure::kOutOfMemory)},
      [](World& w, std::size_t kind, int nth, int variant) {
        w.sim.fail_call(static_cast<DriverCall>(kind), nth, static_cast<InjectedFailure>(variant));
      },
      [](World& w) { w.sim.clear_failures(); },
      [](std::size_t kind) {
        const auto call = static_cast<DriverCall>(kind);
        return call == DriverCall::kReleasePhysical || call == DriverCall::kFreeReservation ||
               call == DriverCall::kHostFree || call == DriverCall::kHostUnregister;
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
        // Dropping cached pages gives memory back too; it is only advice.
        return call == FileCall::kClose || call == FileCall::kUnlink ||
               call == FileCall::kDropCached;
      },
  };
}

/// How many calls of each kind of `family` the operation makes, and the
/// world it leaves, from a run without failures.
struct Reference {
  std::vector<std::size_t> calls;
  WorldSnapshot after;
};

Reference reference_run(const Scenario& scenario, const FaultFamily& family) {
  World world;
  scenario.setup(world);
  std::vector<std::size_t> before(family.kinds);
  for (std::size_t c = 0; c < family.kinds; ++c) before[c] = family.calls(world, c);
  scenario.operation(world);
  Reference reference{std::vector<std::size_t>(family.kinds), world.snapshot()};
  for (std::size_t c = 0; c < family.kinds; ++c) {
    reference.calls[c] = family.calls(world, c) - before[c];
  }
  return reference;
}

/// What a failed operation must leave as it was.
struct Before {
  WorldSnapshot snapshot;
  std::set<std::string> files;
  std::vector<std::size_t> state;

  explicit Before(const World& world)
      : snapshot(world.snapshot()), files(world.dir.files()), state(world.state_bytes()) {}

  void expect_unchanged(const World& world, const Scenario& scenario) const {
    EXPECT_EQ(world.snapshot(), snapshot) << "accounting changed";
    EXPECT_EQ(world.dir.files(), files) << "backup files changed";
    EXPECT_EQ(world.state_bytes(), state) << "allocation state changed";
    EXPECT_TRUE(world.contents_intact(scenario.starts_paused));
  }
};

/// After the operation completed (perhaps on a retry): the world is as in
/// the reference run, backed-up contents are exact, and teardown leaves no
/// backup file.
void expect_completed(World& world, const Scenario& scenario, const Reference& reference) {
  EXPECT_EQ(world.snapshot(), reference.after) << "end state differs";
  if (!scenario.starts_paused) {
    world.engine->resume(std::nullopt);
    EXPECT_TRUE(world.contents_intact(false, true)) << "backed-up contents after the retry";
  }
  world.engine.reset();
  EXPECT_TRUE(world.dir.files().empty()) << "teardown removes every backup file";
  EXPECT_TRUE(testing::backup_fds(world.dir.path()).empty()) << "and closes them";
}

/// Makes every call of `family` that `scenario`'s operation makes fail once
/// in turn, and checks all-or-nothing. Returns how many failures it injected.
std::size_t sweep(const Scenario& scenario, const FaultFamily& family) {
  const Reference reference = reference_run(scenario, family);
  std::size_t injected = 0;
  for (std::size_t c = 0; c < family.kinds; ++c) {
    for (std::size_t nth = 1; nth <= reference.calls[c]; ++nth) {
      for (const int variant : family.variants) {
        SCOPED_TRACE(scenario.name + ": " + family.name(c) + " #" + std::to_string(nth) +
                     " (variant " + std::to_string(variant) + ")");
        World world;
        scenario.setup(world);
        const Before before(world);
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
          before.expect_unchanged(world, scenario);
          family.clear(world);
          EXPECT_NO_THROW(scenario.operation(world)) << "retry after the failure";
        } else {
          EXPECT_TRUE(family.releases(c)) << "the injected failure was swallowed";
          world.engine->pause("no-such-tag");  // any operation retries parked releases
          EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
        }
        expect_completed(world, scenario, reference);
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

/// Calls (first, last] of one kind, sampled: the first and the last. Calls
/// of a kind that repeat (one per copy chunk, per allocation) take the same
/// path in between, and the sweep stays within seconds.
std::vector<std::size_t> sampled_calls(std::size_t first, std::size_t last) {
  std::set<std::size_t> picked;
  for (std::size_t nth : {first + 1, last}) {
    if (nth > first && nth <= last) picked.insert(nth);
  }
  return {picked.begin(), picked.end()};
}

/// Two driver failures in one operation: each call of the operation fails
/// in turn, and with it each call the operation makes after that failure
/// (undoing its work, or going on past a give-back that failed). After the
/// failures clear and one more operation has run (it retries give-backs and
/// repairs broken allocations), the world must be exactly as before the
/// operation (it failed) or as after it (it completed). Returns how many
/// pairs it injected.
std::size_t sweep_pairs(const Scenario& scenario) {
  const FaultFamily family = driver_faults();
  const int variant = static_cast<int>(InjectedFailure::kDriverError);
  const Reference reference = reference_run(scenario, family);
  std::size_t injected = 0;
  for (std::size_t c1 = 0; c1 < family.kinds; ++c1) {
    for (const std::size_t nth1 : sampled_calls(0, reference.calls[c1])) {
      // Which calls the operation makes after the first failure fires.
      std::vector<std::pair<std::size_t, std::size_t>> later;  // (first, last] per kind
      {
        World world;
        scenario.setup(world);
        std::vector<std::size_t> before(family.kinds);
        for (std::size_t c = 0; c < family.kinds; ++c) before[c] = family.calls(world, c);
        family.inject(world, c1, static_cast<int>(nth1), variant);
        try {
          scenario.operation(world);
        } catch (const Error&) {
        }
        for (std::size_t c = 0; c < family.kinds; ++c) {
          const auto kind = static_cast<DriverCall>(c);
          later.emplace_back(world.sim.call_count_at_last_failure(kind) - before[c],
                             family.calls(world, c) - before[c]);
        }
      }
      for (std::size_t c2 = 0; c2 < family.kinds; ++c2) {
        for (const std::size_t nth2 : sampled_calls(later[c2].first, later[c2].second)) {
          SCOPED_TRACE(scenario.name + ": " + family.name(c1) + " #" + std::to_string(nth1) +
                       ", then " + family.name(c2) + " #" + std::to_string(nth2));
          World world;
          scenario.setup(world);
          const Before before(world);
          family.inject(world, c1, static_cast<int>(nth1), variant);
          family.inject(world, c2, static_cast<int>(nth2), variant);
          ++injected;

          bool failed = false;
          try {
            scenario.operation(world);
          } catch (const Error& error) {
            failed = true;
            const std::string what = error.what();
            EXPECT_TRUE(what.find(family.name(c1)) != std::string::npos ||
                        what.find(family.name(c2)) != std::string::npos)
                << "the error names a failing call: " << what;
          }
          // A mapping whose give-back was parked may still be accessible.
          EXPECT_LE(world.active_bytes(), world.sim.accessible_bytes())
              << "a record claims to be active but is not";
          family.clear(world);
          world.engine->pause("no-such-tag");  // retries give-backs, repairs broken records
          EXPECT_EQ(world.active_bytes(), world.sim.accessible_bytes());
          EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
          if (failed) {
            before.expect_unchanged(world, scenario);
            EXPECT_NO_THROW(scenario.operation(world)) << "retry after the failures";
          }
          expect_completed(world, scenario, reference);
          if (::testing::Test::HasFailure()) return injected;
        }
      }
    }
  }
  return injected;
}

TEST_P(FaultSweep, EveryPairOfDriverFailuresLeavesNothingBehind) {
  const Scenario scenario = scenarios()[GetParam()];
  const std::size_t injected = sweep_pairs(scenario);
  // Freeing a paused disk-backed allocation makes one driver call, a give-back.
  if (scenario.name != "free_paused_disk") {
    EXPECT_GT(injected, 0u) << "the sweep must have covered some pairs";
  }
}

INSTANTIATE_TEST_SUITE_P(Operations, FaultSweep, ::testing::Range<std::size_t>(0, 10),
                         [](const ::testing::TestParamInfo<std::size_t>& param_info) {
                           return scenarios()[param_info.param].name;
                         });

/// A non-blocking resume and the wait after it, with every driver call they
/// make failing once in turn (the event calls too: a failing wait on an
/// event stands for a copy that failed after the resume returned). The
/// resume either fails and leaves everything as it was, or returns; then
/// wait() raises the failure at most once and the next wait restores every
/// backed-up allocation exactly. Nothing is lost and nothing leaks.
TEST(NonBlockingFaultSweep, EveryDriverCallFailingOnceLosesNothing) {
  const Scenario scenario{"resume_non_blocking", [](World& w) { w.engine->pause(std::nullopt); },
                          [](World& w) {
                            w.engine->resume(std::nullopt, ResumeMode::kNonBlocking);
                            w.engine->wait(std::nullopt);
                          },
                          true};
  const FaultFamily family = driver_faults();
  const Reference reference = reference_run(scenario, family);
  ASSERT_GT(reference.calls[static_cast<std::size_t>(DriverCall::kSynchronizeEvent)], 0u);
  std::size_t raised_by_wait = 0;
  for (std::size_t c = 0; c < family.kinds; ++c) {
    for (std::size_t nth = 1; nth <= reference.calls[c]; ++nth) {
      for (const int variant : family.variants) {
        SCOPED_TRACE(family.name(c) + " #" + std::to_string(nth) + " (variant " +
                     std::to_string(variant) + ")");
        World world;
        scenario.setup(world);
        const Before before(world);
        family.inject(world, c, static_cast<int>(nth), variant);
        try {
          world.engine->resume(std::nullopt, ResumeMode::kNonBlocking);
        } catch (const Error&) {
          EXPECT_FALSE(family.releases(c)) << "giving back must not fail the resume";
          before.expect_unchanged(world, scenario);
          family.clear(world);
          world.engine->resume(std::nullopt, ResumeMode::kNonBlocking);
        }
        bool waited = false;
        for (int attempt = 0; attempt < 2 && !waited; ++attempt) {
          try {
            world.engine->wait(std::nullopt);
            waited = true;
          } catch (const Error& error) {
            ++raised_by_wait;
            EXPECT_NE(std::string(error.what()).find("backups are kept"), std::string::npos)
                << error.what();
          }
        }
        family.clear(world);
        EXPECT_TRUE(waited) << "the wait after a raised failure restores";
        EXPECT_TRUE(world.contents_intact(false, true)) << "backed-up contents";
        world.engine->pause("no-such-tag");  // retries parked give-backs
        EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
        EXPECT_EQ(world.snapshot(), reference.after) << "end state differs";
        world.engine.reset();
        EXPECT_TRUE(world.dir.files().empty());
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
  EXPECT_GT(raised_by_wait, 0u) << "no failure reached wait()";
}

// The double fault the pair sweep found: an unmap fails during pause, and
// mapping back an allocation already unmapped fails as well.
class PauseRollback : public ::testing::Test {
 protected:
  static constexpr std::size_t kSize = 4 * kMiB;
  testing::FaultySim sim;
  Engine engine{sim};
  DevicePtr broken = 0;   // claimed first by the pause: unmapped, then not mapped back
  DevicePtr healthy = 0;  // its unmap fails: still active

  void SetUp() override {
    const DevicePtr a = engine.allocate({kSize, 0, "t", {BackupKind::kHost}});
    const DevicePtr b = engine.allocate({kSize, 0, "t", {BackupKind::kHost}});
    broken = std::min(a, b);  // pause works in address order
    healthy = std::max(a, b);
    testing::fill_pattern(broken, kSize, 1);
    testing::fill_pattern(healthy, kSize, 2);
  }

  /// Fails the pause of "t" at its second unmap, then `rollback` (the map or
  /// the access grant of the first, already unmapped, allocation).
  void double_fault(DriverCall rollback) {
    sim.fail_call(DriverCall::kUnmap, 2);
    sim.fail_call(rollback, 1);
    try {
      engine.pause("t");
      ADD_FAILURE() << "the pause succeeded";
    } catch (const Error& error) {
      EXPECT_EQ(error.status(), TMS_ERROR_DRIVER);
      EXPECT_NE(std::string(error.what()).find("sim.unmap"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("unusable"), std::string::npos)
          << "the error hides the unusable allocation: " << error.what();
    }
  }

  [[nodiscard]] std::size_t broken_bytes() const {
    std::size_t bytes = 0;
    for (const TagDeviceStats& entry : engine.stats().entries) bytes += entry.broken_bytes;
    return bytes;
  }
};

TEST_F(PauseRollback, UnusableAllocationIsBrokenNotActiveAndEveryUseIsAnError) {
  double_fault(DriverCall::kMap);
  EXPECT_EQ(broken_bytes(), kSize);
  EXPECT_EQ(sim.accessible_bytes(), kSize) << "only the healthy one is usable";
  sim.fail_call(DriverCall::kMap, 1);  // the repair at the start of the next pause fails too
  EXPECT_THROW(engine.pause("t"), InvalidState);
  sim.fail_call(DriverCall::kMap, 1);
  EXPECT_THROW(engine.resume("t"), InvalidState);
  sim.fail_call(DriverCall::kMap, 1);
  EXPECT_THROW(engine.pause(std::nullopt), InvalidState);
  EXPECT_TRUE(testing::has_pattern(healthy, kSize, 2)) << "the other one is still active";
  EXPECT_EQ(engine.backup_pointer(broken, 16), nullptr);

  // Once the driver works, the next operation maps it back with its contents.
  engine.pause("t");
  EXPECT_EQ(broken_bytes(), 0u);
  engine.resume("t");
  EXPECT_TRUE(testing::has_pattern(broken, kSize, 1));
  EXPECT_TRUE(testing::has_pattern(healthy, kSize, 2));
}

TEST_F(PauseRollback, FreeGivesBackWhatABrokenAllocationHolds) {
  double_fault(DriverCall::kMap);
  engine.free(broken);
  EXPECT_FALSE(engine.owns(broken));
  EXPECT_EQ(sim.physical_bytes(0), kSize);
  EXPECT_EQ(sim.reserved_bytes(), kSize);
  engine.free(healthy);
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

TEST_F(PauseRollback, MappedButInaccessibleAllocationIsBrokenAndFreeUnmapsIt) {
  double_fault(DriverCall::kSetAccess);
  EXPECT_EQ(broken_bytes(), kSize);
  EXPECT_EQ(sim.mapped_bytes(), 2 * kSize) << "the map of the rollback succeeded";
  EXPECT_EQ(sim.accessible_bytes(), kSize);
  engine.free(broken);
  EXPECT_EQ(sim.mapped_bytes(), kSize);
  EXPECT_EQ(sim.physical_bytes(0), kSize);
  EXPECT_EQ(sim.reserved_bytes(), kSize);
}

TEST(PauseRollbackTeardown, EngineTeardownGivesBackBrokenAllocations) {
  testing::FaultySim sim;
  {
    Engine engine(sim);
    engine.allocate({kMiB, 0, "u", {}});
    engine.allocate({kMiB, 0, "u", {}});
    sim.fail_call(DriverCall::kUnmap, 2);
    sim.fail_call(DriverCall::kSetAccess, 1);
    EXPECT_THROW(engine.pause("u"), Error);
  }
  EXPECT_EQ(sim.physical_bytes(0), 0u);
  EXPECT_EQ(sim.mapped_bytes(), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

}  // namespace
}  // namespace tms
