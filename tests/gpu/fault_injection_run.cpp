// The engine's fault tests against a real driver: the engine runs on
// CudaDriver (or SimDriver, to test this program without a GPU) wrapped in
// the fault injector, with real device memory and copies that are
// asynchronous, unlike the simulation's.
//
//   sweep   every driver call of a pause/resume cycle with host backups
//           fails once in turn, as a driver error and as out-of-memory: the
//           failed operation leaves everything as it was (states, device
//           contents, host backups, device memory in use), a retry
//           succeeds, and the cycle ends with exact contents and nothing
//           left behind; a failure in a give-back is swallowed and retried.
//   stress  seeded iterations of random allocate / write / free / pause /
//           resume on two tags while 1-3 random driver calls fail, each step
//           checked against a model (states, device contents, host backups,
//           per-tag statistics).
//
// Prints a summary table; exits 0 when every check passed, 1 otherwise, and
// 77 (ctest's skip) when --driver cuda finds no usable GPU.
//
//   tms_fault_injection_run [--driver cuda|sim] [--iterations N] [--seed S]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/log.h"
#include "common/sizes.h"
#include "core/engine.h"
#include "driver/cuda_driver.h"
#include "driver/fault_injecting_driver.h"
#include "driver/sim_driver.h"

namespace tms {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr int kSkip = 77;

/// Every failed check, printed as it happens and counted for the exit status.
struct Problems {
  int count = 0;
  void add(const std::string& where, const std::string& what) {
    ++count;
    if (count <= 50) std::printf("PROBLEM %s: %s\n", where.c_str(), what.c_str());
  }
};

/// Reads and writes device memory through the unwrapped driver, so that the
/// checks are neither counted nor failed by the injector.
class DeviceAccess {
 public:
  explicit DeviceAccess(Driver& target) : target_(target) {}

  void write(DevicePtr ptr, const std::vector<std::uint8_t>& bytes) {
    target_.copy_to_device_async(0, ptr, bytes.data(), bytes.size(), nullptr);
    target_.synchronize_stream(0, nullptr);
  }
  [[nodiscard]] std::vector<std::uint8_t> read(DevicePtr ptr, std::size_t size) {
    std::vector<std::uint8_t> bytes(size);
    target_.copy_to_host_async(0, bytes.data(), ptr, size, nullptr);
    target_.synchronize_stream(0, nullptr);
    return bytes;
  }
  [[nodiscard]] std::size_t free_bytes() { return target_.memory_info(0).free_bytes; }

 private:
  Driver& target_;
};

std::vector<std::uint8_t> pattern(std::size_t size, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::uint8_t>(seed + i * 31 + (i >> 12));
  }
  return bytes;
}

bool same(const std::uint8_t* bytes, const std::vector<std::uint8_t>& expected) {
  return bytes != nullptr && std::memcmp(bytes, expected.data(), expected.size()) == 0;
}

/// Small chunks and batches, so that a cycle makes many calls of each kind
/// and copies overlap: several register chunks, copy pieces on two lanes,
/// resume mapping in batches of two while the previous batch copies.
EngineOptions run_options() {
  EngineOptions options;
  options.host.register_chunk_bytes = kMiB;
  options.host.prepare_threads = 2;
  options.host.small_request_bytes = 3 * kMiB;
  options.copies.chunk_bytes = 768 * 1024;
  options.resume.batch_allocations = 2;
  return options;
}

AllocationRequest request(std::size_t size, const std::string& tag, bool backup,
                          HostMemoryKind kind = HostMemoryKind::kPinned) {
  return {size, 0, tag, backup ? BackupPolicy{BackupKind::kHost, kind} : BackupPolicy{}};
}

std::vector<std::size_t> state_of(const Engine& engine) {
  std::vector<std::size_t> state;
  for (const TagDeviceStats& entry : engine.stats().entries) {
    state.insert(state.end(), {entry.allocations, entry.active_bytes, entry.paused_bytes,
                               entry.broken_bytes, entry.backup_bytes});
  }
  return state;
}

// ---- the sweep -------------------------------------------------------------

struct Tracked {
  DevicePtr ptr;
  std::size_t size;
  bool backup;
  std::vector<std::uint8_t> contents;
};

/// An engine on the wrapped driver holding host-backed allocations (pinned
/// and mmap) and one without a backup, warmed up so that the copy streams
/// exist before anything is counted.
class World {
 public:
  World(Driver& target, FaultInjectingDriver& faults)
      : device_(target), faults_(faults), free_before_(device_.free_bytes()) {
    engine_ = std::make_unique<Engine>(faults_, run_options());
    const DevicePtr warm = engine_->allocate(request(2 * kMiB, "warm", true));
    engine_->pause("warm");
    engine_->resume("warm");
    engine_->free(warm);
    add(3 * kMiB + 5, true, HostMemoryKind::kPinned, 11);
    add(2 * kMiB, true, HostMemoryKind::kMmap, 12);
    add(4 * kMiB, false, HostMemoryKind::kPinned, 13);
    add(kMiB + 3, true, HostMemoryKind::kPinned, 14);
  }

  Engine& engine() { return *engine_; }
  [[nodiscard]] std::size_t free_bytes() { return device_.free_bytes(); }

  /// Whether the allocations are as `paused` says: active ones hold their
  /// contents on the device, paused backed-up ones in their host backup.
  [[nodiscard]] std::string contents_problem(bool paused) {
    for (const Tracked& t : tracked_) {
      if (!paused) {
        if (device_.read(t.ptr, t.size) != t.contents) return "device contents differ";
      } else if (t.backup) {
        if (!same(engine_->backup_pointer(t.ptr, t.size), t.contents)) {
          return "host backup contents differ";
        }
      } else if (engine_->backup_pointer(t.ptr, t.size) != nullptr) {
        return "an allocation without backup has one";
      }
    }
    return {};
  }

  /// After a resume: backed-up allocations hold their contents again.
  [[nodiscard]] bool backed_up_contents_exact() {
    for (const Tracked& t : tracked_) {
      if (t.backup && device_.read(t.ptr, t.size) != t.contents) return false;
    }
    return true;
  }

  /// Frees everything and destroys the engine; the device memory in use is
  /// then what it was before the world existed.
  [[nodiscard]] std::optional<std::string> teardown() {
    for (const Tracked& t : tracked_) engine_->free(t.ptr);
    engine_.reset();
    const std::size_t free_after = device_.free_bytes();
    if (free_after == free_before_) return std::nullopt;
    return "device memory free before " + std::to_string(free_before_) + ", after teardown " +
           std::to_string(free_after);
  }

 private:
  void add(std::size_t size, bool backup, HostMemoryKind kind, std::uint8_t seed) {
    const DevicePtr ptr = engine_->allocate(request(size, "weights", backup, kind));
    tracked_.push_back({ptr, size, backup, pattern(size, seed)});
    device_.write(ptr, tracked_.back().contents);
  }

  DeviceAccess device_;
  FaultInjectingDriver& faults_;
  std::size_t free_before_;
  std::unique_ptr<Engine> engine_;
  std::vector<Tracked> tracked_;
};

/// Giving a resource back: past the point of no return, so a failure there
/// must not fail the operation (it is parked and retried).
bool gives_back(DriverCall call) {
  return call == DriverCall::kReleasePhysical || call == DriverCall::kFreeReservation ||
         call == DriverCall::kHostFree || call == DriverCall::kHostUnregister;
}

struct SweepRow {
  std::size_t calls = 0;  // in one fault-free cycle
  int injected = 0;
  int failed_pause = 0;
  int failed_resume = 0;
  int given_back = 0;  // swallowed and retried
  int not_fired = 0;
};

/// One injected failure: the cycle (pause, then resume) runs with it; an
/// operation that fails must have changed nothing and succeed on retry.
void sweep_one(Driver& target, DriverCall call, int nth, InjectedFailure failure, SweepRow& row,
               Problems& problems) {
  const std::string where = std::string(driver_call_name(call)) + " #" + std::to_string(nth) +
                            (failure == InjectedFailure::kOutOfMemory ? " (oom)" : " (error)");
  FaultInjectingDriver faults(target);
  World world(target, faults);
  Engine& engine = world.engine();
  const std::string name = std::string(driver_call_name(call));
  faults.fail_call(call, nth, failure);
  ++row.injected;

  const auto attempt = [&](bool pause) -> bool {  // true: it failed and was checked
    const std::vector<std::size_t> state = state_of(engine);
    const std::size_t free_before = world.free_bytes();
    try {
      pause ? engine.pause("weights") : engine.resume("weights");
      return false;
    } catch (const Error& error) {
      const std::string what = error.what();
      if (what.find(name) == std::string::npos)
        problems.add(where, "error names another call: " + what);
      if (gives_back(call)) problems.add(where, "a give-back failed the operation: " + what);
      if (state_of(engine) != state) problems.add(where, "allocation states changed");
      if (world.free_bytes() != free_before) problems.add(where, "device memory in use changed");
      const std::string contents = world.contents_problem(!pause);
      if (!contents.empty()) problems.add(where, contents + " after the failed operation");
      faults.clear_failures();
      try {
        pause ? engine.pause("weights") : engine.resume("weights");
      } catch (const Error& retry) {
        problems.add(where, std::string("retry failed: ") + retry.what());
      }
      return true;
    }
  };

  try {
    const bool pause_failed = attempt(true);
    const std::string paused = world.contents_problem(true);
    if (!paused.empty()) problems.add(where, paused + " after the pause");
    const bool resume_failed = attempt(false);
    const bool fired = faults.call_count_at_last_failure(call) > 0;
    faults.clear_failures();
    row.failed_pause += pause_failed ? 1 : 0;
    row.failed_resume += resume_failed ? 1 : 0;
    if (!fired) {
      ++row.not_fired;
    } else if (!pause_failed && !resume_failed) {
      // It fired and neither operation failed: only a give-back may be swallowed.
      if (gives_back(call)) {
        ++row.given_back;
      } else {
        problems.add(where, "the injected failure was swallowed");
      }
    }
    if (!world.backed_up_contents_exact()) problems.add(where, "contents after the cycle differ");
    engine.pause("no-such-tag");  // any operation retries parked give-backs
    if (engine.stats().deferred_releases != 0) problems.add(where, "give-backs still parked");
    if (const auto leak = world.teardown()) problems.add(where, *leak);
  } catch (const std::exception& error) {
    problems.add(where, std::string("unexpected exception: ") + error.what());
  }
}

void run_sweep(Driver& target, Problems& problems) {
  // A first world whose teardown is not compared: on an H100 (driver 580)
  // the first world of a process had 2 MiB less free after its teardown,
  // memory the driver keeps once it has made a context's first streams and
  // copies (a later world's teardown is compared exactly).
  {
    FaultInjectingDriver faults(target);
    World warm_up(target, faults);
    (void)warm_up.teardown();
  }
  // Counts of each call in one fault-free cycle (after warm-up).
  std::vector<std::size_t> calls(static_cast<std::size_t>(DriverCall::kCount));
  {
    FaultInjectingDriver faults(target);
    World world(target, faults);
    for (std::size_t c = 0; c < calls.size(); ++c) calls[c] = faults.call_count(DriverCall(c));
    world.engine().pause("weights");
    world.engine().resume("weights");
    for (std::size_t c = 0; c < calls.size(); ++c) {
      calls[c] = faults.call_count(DriverCall(c)) - calls[c];
    }
    if (!world.backed_up_contents_exact()) problems.add("reference", "contents differ");
    if (const auto leak = world.teardown()) problems.add("reference", *leak);
  }
  std::printf(
      "\nfault sweep: one pause/resume cycle of 4 allocations (3 host-backed), "
      "each call failing once in turn\n");
  std::printf("%-20s %6s %9s %7s %8s %10s %9s\n", "call", "calls", "injected", "pause", "resume",
              "given back", "not fired");
  SweepRow total;
  for (std::size_t c = 0; c < calls.size(); ++c) {
    SweepRow row;
    row.calls = calls[c];
    for (std::size_t nth = 1; nth <= calls[c]; ++nth) {
      for (const InjectedFailure failure :
           {InjectedFailure::kDriverError, InjectedFailure::kOutOfMemory}) {
        sweep_one(target, DriverCall(c), static_cast<int>(nth), failure, row, problems);
      }
    }
    std::printf("%-20s %6zu %9d %7d %8d %10d %9d\n",
                std::string(driver_call_name(DriverCall(c))).c_str(), row.calls, row.injected,
                row.failed_pause, row.failed_resume, row.given_back, row.not_fired);
    total.calls += row.calls;
    total.injected += row.injected;
    total.failed_pause += row.failed_pause;
    total.failed_resume += row.failed_resume;
    total.given_back += row.given_back;
    total.not_fired += row.not_fired;
  }
  std::printf("%-20s %6zu %9d %7d %8d %10d %9d\n", "total", total.calls, total.injected,
              total.failed_pause, total.failed_resume, total.given_back, total.not_fired);
}

// ---- the stress ---------------------------------------------------------------

struct Expected {
  std::size_t size;
  bool backup;
  bool paused = false;
  /// Active after a pause failed and said some allocations are unusable:
  /// may be broken until the engine repairs it (the tag's broken_bytes is 0).
  bool maybe_broken = false;
  std::uint8_t fill;
};

/// One tag's allocations and what they must hold.
class TagModel {
 public:
  TagModel(Engine& engine, DeviceAccess& device, std::string tag, Problems& problems)
      : engine_(engine), device_(device), tag_(std::move(tag)), problems_(problems) {}

  void step(std::mt19937& random, int& failed_ops) {
    const auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(random); };
    try {
      switch (pick(7)) {
        case 0:
        case 1:
          allocate(pick);
          break;
        case 2:
          free_one(pick);
          break;
        case 3:
        case 4:
          transition(true);
          break;
        case 5:
          transition(false, /*non_blocking=*/pick(2) == 0);
          break;
        default:
          write_one(pick);
      }
    } catch (const Error&) {
      ++failed_ops;  // allocate and free: all or nothing, the model is unchanged
    }
    verify();
  }

  /// With the driver healthy again: everything resumes, is checked and freed.
  void finish() {
    transition(false);
    for (auto& [ptr, expected] : model_) {
      if (expected.maybe_broken) problems_.add(tag_, "still broken after a healthy resume");
      expected.maybe_broken = false;
    }
    verify();
    for (const auto& [ptr, expected] : model_) engine_.free(ptr);
    model_.clear();
  }

 private:
  template <typename Pick>
  void allocate(Pick& pick) {
    if (model_.size() >= 6) return;
    const std::size_t size = 1 + static_cast<std::size_t>(pick(static_cast<int>(3 * kMiB)));
    const bool backup = pick(3) != 0;
    const DevicePtr ptr = engine_.allocate(request(
        size, tag_, backup, pick(2) == 0 ? HostMemoryKind::kPinned : HostMemoryKind::kMmap));
    const auto fill = static_cast<std::uint8_t>(1 + pick(250));
    device_.write(ptr, std::vector<std::uint8_t>(size, fill));
    model_[ptr] = {size, backup, false, false, fill};
  }

  template <typename Pick>
  void free_one(Pick& pick) {
    if (model_.empty()) return;
    auto it = model_.begin();
    std::advance(it, pick(static_cast<int>(model_.size())));
    engine_.free(it->first);
    model_.erase(it);
  }

  template <typename Pick>
  void write_one(Pick& pick) {
    for (auto& [ptr, expected] : model_) {
      if (expected.paused || expected.maybe_broken) continue;
      expected.fill = static_cast<std::uint8_t>(1 + pick(250));
      device_.write(ptr, std::vector<std::uint8_t>(expected.size, expected.fill));
      return;
    }
  }

  /// A non-blocking resume is waited for at once: a failure raised by the
  /// wait (a copy that failed after the return) keeps the backups, and the
  /// next wait restores them; at most three failures are scheduled per
  /// iteration, so the fourth wait has none left to meet.
  void transition(bool pause, bool non_blocking = false) {
    try {
      if (pause) {
        engine_.pause(tag_);
      } else {
        engine_.resume(tag_, non_blocking ? ResumeMode::kNonBlocking : ResumeMode::kBlocking);
        for (int attempt = 0; non_blocking; ++attempt) {
          try {
            engine_.wait(tag_);
            break;
          } catch (const Error&) {
            if (attempt == 3)
              problems_.add(tag_, "a wait after a non-blocking resume kept failing");
            if (attempt == 3) throw;
          }
        }
      }
    } catch (const Error& error) {
      // All or nothing, except a pause that could not map everything back.
      if (pause && std::string(error.what()).find("unusable") != std::string::npos) {
        for (auto& [ptr, expected] : model_) expected.maybe_broken = !expected.paused;
      }
      settle_broken();
      throw;
    }
    settle_broken();  // it repaired broken allocations first
    for (auto& [ptr, expected] : model_) {
      if (expected.paused == pause) continue;
      expected.paused = pause;
      if (!pause && !expected.backup) expected.fill = 0;  // contents not kept: not checked
    }
  }

  void settle_broken() {
    if (stats().broken_bytes != 0) return;
    for (auto& [ptr, expected] : model_) expected.maybe_broken = false;
  }

  [[nodiscard]] TagDeviceStats stats() const {
    for (const TagDeviceStats& entry : engine_.stats().entries) {
      if (entry.tag == tag_) return entry;
    }
    return {};
  }

  void verify() {
    std::size_t paused = 0;
    std::size_t unpaused = 0;
    const std::size_t granularity = engine_.driver().granularity(0);
    for (const auto& [ptr, expected] : model_) {
      if (!engine_.owns(ptr)) problems_.add(tag_, "an allocation is gone");
      const std::vector<std::uint8_t> want(expected.size, expected.fill);
      if (expected.paused) {
        paused += round_up(expected.size, granularity);
        const std::uint8_t* backup = engine_.backup_pointer(ptr, expected.size);
        if (expected.backup && !same(backup, want)) problems_.add(tag_, "host backup differs");
        if (!expected.backup && backup != nullptr) problems_.add(tag_, "unexpected backup");
        continue;
      }
      unpaused += round_up(expected.size, granularity);
      // Fresh memory after resuming without backup holds anything on a GPU.
      if (expected.maybe_broken || expected.fill == 0) continue;
      if (device_.read(ptr, expected.size) != want) problems_.add(tag_, "device contents differ");
    }
    const TagDeviceStats entry = stats();
    if (entry.paused_bytes != paused) problems_.add(tag_, "paused bytes differ from the model");
    if (entry.active_bytes + entry.broken_bytes != unpaused) {
      problems_.add(tag_, "active bytes differ from the model");
    }
  }

  Engine& engine_;
  DeviceAccess& device_;
  const std::string tag_;
  Problems& problems_;
  std::map<DevicePtr, Expected> model_;
};

void run_stress(Driver& target, int iterations, unsigned seed, Problems& problems) {
  DeviceAccess device(target);
  const std::size_t free_before = device.free_bytes();
  FaultInjectingDriver faults(target);
  int steps = 0;
  int failed_ops = 0;
  std::size_t fired = 0;
  {
    Engine engine(faults, run_options());
    std::vector<TagModel> tags;
    tags.emplace_back(engine, device, "s0", problems);
    tags.emplace_back(engine, device, "s1", problems);
    for (int i = 0; i < iterations && problems.count == 0; ++i) {
      std::mt19937 random(seed + static_cast<unsigned>(i));
      const auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(random); };
      const int failures = 1 + pick(3);
      for (int f = 0; f < failures; ++f) {
        faults.fail_call(
            DriverCall(pick(static_cast<int>(DriverCall::kCount))), 1 + pick(4),
            pick(3) == 0 ? InjectedFailure::kOutOfMemory : InjectedFailure::kDriverError);
      }
      std::size_t calls_before = 0;
      for (std::size_t c = 0; c < static_cast<std::size_t>(DriverCall::kCount); ++c) {
        calls_before += faults.call_count_at_last_failure(DriverCall(c));
      }
      for (int op = 0; op < 6; ++op, ++steps)
        tags[static_cast<std::size_t>(pick(2))].step(random, failed_ops);
      std::size_t calls_after = 0;
      for (std::size_t c = 0; c < static_cast<std::size_t>(DriverCall::kCount); ++c) {
        calls_after += faults.call_count_at_last_failure(DriverCall(c));
      }
      if (calls_after != calls_before) ++fired;  // at least one failure fired this iteration
      faults.clear_failures();
    }
    for (TagModel& tag : tags) tag.finish();
    engine.pause("no-such-tag");  // gives back what is still parked
    if (engine.stats().deferred_releases != 0) problems.add("stress", "give-backs still parked");
    engine.drain_host_releases();
  }
  const std::size_t free_after = device.free_bytes();
  if (free_after != free_before) {
    problems.add("stress", "device memory free before " + std::to_string(free_before) + ", after " +
                               std::to_string(free_after));
  }
  std::printf(
      "\nstress: %d seeded iterations (seed %u), %d steps, %d operations failed, "
      "failures fired in %zu iterations\n",
      iterations, seed, steps, failed_ops, fired);
}

int run(int argc, char** argv) {
  std::string driver_kind = "cuda";
  int iterations = 200;
  unsigned seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--driver") {
      driver_kind = argv[i + 1];
    } else if (flag == "--iterations") {
      iterations = std::atoi(argv[i + 1]);
    } else if (flag == "--seed") {
      seed = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::unique_ptr<Driver> target;
  if (driver_kind == "sim") {
    target = std::make_unique<SimDriver>(SimDriverOptions{.capacity_bytes = 256 * kMiB});
  } else if (driver_kind == "cuda") {
    auto cuda = std::make_unique<CudaDriver>();
    try {
      cuda->load();
      if (cuda->device_count() < 1) throw DriverUnavailable("no CUDA device");
      (void)cuda->memory_info(0);  // a context on device 0 works
    } catch (const Error& error) {
      std::printf("SKIP: no usable GPU (%s)\n", error.what());
      return kSkip;
    }
    target = std::move(cuda);
  } else {
    std::fprintf(stderr, "--driver takes cuda or sim\n");
    return 2;
  }
  // Each injected give-back failure logs a warning; the table tells the story.
  set_log_level(LogLevel::kError);
  std::printf("fault injection over the %s driver\n", std::string(target->name()).c_str());
  Problems problems;
  try {
    run_sweep(*target, problems);
    run_stress(*target, iterations, seed, problems);
  } catch (const std::exception& error) {
    problems.add("run", std::string("unexpected exception: ") + error.what());
  }
  std::printf("\n%s: %d problem(s)\n", problems.count == 0 ? "PASS" : "FAIL", problems.count);
  return problems.count == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tms

int main(int argc, char** argv) { return tms::run(argc, argv); }
