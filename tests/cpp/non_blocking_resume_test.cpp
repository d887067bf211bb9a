// Non-blocking resume (Engine::resume with ResumeMode::kNonBlocking): it
// returns with the restore copies still queued; wait() finishes them and
// gives the host backups back; pause, free, discard and leases of memory
// being restored wait for the restore; a restore failing after the resume
// returned is raised by wait() and loses nothing.
//
// The simulated driver defers copies here (set_copies_deferred), as a GPU
// runs them behind the caller, and can hold event waits
// (hold_event_waits), so that a restore stays "in flight" as long as a
// test needs.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;
using namespace std::chrono_literals;

struct Tensor {
  DevicePtr ptr;
  std::size_t size;
  std::uint8_t seed;
};

/// An engine on a fault-injectable simulation with deferred copies, and
/// allocations of tag "opt" (host backups) and "params" (host backup).
struct NonBlockingWorld {
  testing::FaultySim sim{{.device_count = 1, .capacity_bytes = 256 * kMiB}};
  std::unique_ptr<Engine> engine = [this] {
    EngineOptions options;
    options.copies.chunk_bytes = 768 * 1024;  // several copies per allocation, on both lanes
    return std::make_unique<Engine>(sim, options);
  }();
  std::vector<Tensor> opt;
  std::vector<Tensor> params;

  NonBlockingWorld() {
    for (std::uint8_t i = 0; i < 3; ++i) opt.push_back(add("opt", 3 * kMiB + 11 * i, 40 + i));
    params.push_back(add("params", 2 * kMiB, 50));
    sim.simulation().set_copies_deferred(true);
  }

  Tensor add(const std::string& tag, std::size_t size, std::uint8_t seed) {
    const DevicePtr ptr = engine->allocate(testing::request(size, 0, tag, testing::host_backup()));
    testing::fill_pattern(ptr, size, seed);
    return {ptr, size, seed};
  }

  static bool intact(const std::vector<Tensor>& tensors) {
    for (const Tensor& t : tensors) {
      if (!testing::has_pattern(t.ptr, t.size, t.seed)) return false;
    }
    return true;
  }
  static bool zero(const std::vector<Tensor>& tensors) {
    for (const Tensor& t : tensors) {
      if (!testing::all_zero(t.ptr, t.size)) return false;
    }
    return true;
  }
  std::size_t backup_bytes(const std::string& tag) const {
    std::size_t bytes = 0;
    for (const TagDeviceStats& entry : engine->stats().entries) {
      if (entry.tag == tag) bytes += entry.backup_bytes;
    }
    return bytes;
  }
};

/// Runs `operation` on a thread; done() says whether it has returned.
class Background {
 public:
  explicit Background(std::function<void()> operation)
      : thread_([this, op = std::move(operation)] {
          try {
            op();
          } catch (const std::exception& error) {
            failure_ = error.what();
          }
          done_.store(true);
        }) {}
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] bool done() const { return done_.load(); }
  /// Joins; the operation's error message, or "" when it succeeded.
  std::string join() {
    thread_.join();
    return failure_;
  }

 private:
  std::atomic<bool> done_{false};
  std::string failure_;
  std::thread thread_;
};

/// Whether `background` is still blocked after a while.
bool still_waiting(const Background& background) {
  std::this_thread::sleep_for(50ms);
  return !background.done();
}

TEST(NonBlockingResume, ReturnsMappedBeforeTheCopiesAndWaitFinishesThemAndFreesTheHostMemory) {
  NonBlockingWorld w;
  w.engine->pause(std::nullopt);
  const std::size_t host_paused = w.sim.host_bytes();
  ASSERT_GT(host_paused, 0u);
  w.sim.simulation().hold_event_waits(true);
  w.engine->resume("opt", ResumeMode::kNonBlocking);

  // Mapped and usable memory, not yet restored; the backups are still held.
  EXPECT_GT(w.sim.simulation().deferred_copies(), 0u);
  EXPECT_TRUE(NonBlockingWorld::zero(w.opt)) << "the copies ran before resume returned";
  EXPECT_EQ(w.sim.host_bytes(), host_paused) << "host memory given back under queued copies";
  EXPECT_GT(w.backup_bytes("opt"), 0u);
  for (const TagDeviceStats& entry : w.engine->stats().entries) {
    if (entry.tag == "opt") {
      EXPECT_GT(entry.active_bytes, 0u);
    }
  }

  w.sim.simulation().hold_event_waits(false);
  w.engine->wait("opt");
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
  EXPECT_EQ(w.backup_bytes("opt"), 0u);
  EXPECT_LT(w.sim.host_bytes(), host_paused) << "the restored backups' memory is back";
  // The other tag is untouched; a blocking resume of it works as before.
  w.engine->resume("params");
  EXPECT_TRUE(NonBlockingWorld::intact(w.params));
  EXPECT_EQ(w.sim.host_bytes(), 0u);
  EXPECT_EQ(w.sim.simulation().live_events(), 0u) << "events outlived their restore";
}

TEST(NonBlockingResume, TheWatcherGivesTheHostMemoryBackWithoutAWait) {
  NonBlockingWorld w;
  w.engine->pause(std::nullopt);
  w.engine->resume(std::nullopt, ResumeMode::kNonBlocking);
  // Nobody waits: the watcher thread finishes the restore by itself.
  for (int i = 0; i < 2000 && w.sim.host_bytes() > 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(w.sim.host_bytes(), 0u);
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
  EXPECT_TRUE(NonBlockingWorld::intact(w.params));
}

TEST(NonBlockingResume, WaitOnStreamOrdersTheRestoreAndWaitWithNothingInFlightReturns) {
  NonBlockingWorld w;
  w.engine->wait(std::nullopt);  // nothing to wait for
  w.engine->wait_on_stream(std::nullopt, nullptr);
  w.engine->pause("opt");
  w.sim.simulation().hold_event_waits(true);
  w.engine->resume("opt", ResumeMode::kNonBlocking);
  EXPECT_TRUE(NonBlockingWorld::zero(w.opt));
  w.sim.simulation().hold_event_waits(false);
  // The simulation has no work of the caller's to hold back: the marked
  // copies run now, as a stream would see them done.
  w.engine->wait_on_stream("opt", nullptr);
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
  w.engine->wait("opt");
}

TEST(NonBlockingResume, PauseFreeDiscardAndLeaseWaitForTheRestoreInFlight) {
  NonBlockingWorld w;
  w.engine->set_retain_cpu_backup(true);  // a backup to lease while active
  w.engine->pause(std::nullopt);
  w.sim.simulation().hold_event_waits(true);
  w.engine->resume(std::nullopt, ResumeMode::kNonBlocking);

  Background pause([&] { w.engine->pause("opt"); });
  Background free_one([&] { w.engine->free(w.params[0].ptr); });
  Background lease([&] {
    const BackupLease held = w.engine->lease_backup(w.opt[1].ptr, w.opt[1].size);
    w.engine->end_lease(held.id);
  });
  Background discard([&] { w.engine->discard_backup(w.opt[2].ptr); });
  EXPECT_TRUE(still_waiting(pause)) << "pause ran under the restore";
  EXPECT_FALSE(free_one.done()) << "free ran under the restore";
  EXPECT_FALSE(lease.done()) << "a lease was taken under the restore";
  EXPECT_FALSE(discard.done()) << "discard ran under the restore";

  w.sim.simulation().hold_event_waits(false);
  EXPECT_EQ(free_one.join(), "");
  EXPECT_EQ(lease.join(), "");
  // The restore finished first: the allocation is active, so there is no
  // paused backup to discard (or it ran after the pause: then it is paused).
  const std::string discarded = discard.join();
  EXPECT_EQ(pause.join(), "");
  EXPECT_TRUE(discarded.empty() || discarded.find("is active") != std::string::npos) << discarded;
  // The pause saved the restored contents, not the zeros under the copies.
  w.engine->resume(std::nullopt);
  EXPECT_TRUE(NonBlockingWorld::intact({w.opt[0], w.opt[1]}));
  EXPECT_FALSE(w.engine->owns(w.params[0].ptr));
}

TEST(NonBlockingResume, ACopyFailingAfterReturnIsRaisedByWaitAndTheNextWaitRestoresIt) {
  NonBlockingWorld w;
  w.engine->pause(std::nullopt);
  const std::size_t backups = w.backup_bytes("opt");
  w.sim.fail_call(DriverCall::kSynchronizeEvent, 1);
  ASSERT_NO_THROW(w.engine->resume("opt", ResumeMode::kNonBlocking));

  try {
    w.engine->wait("opt");
    FAIL() << "the failed restore was not raised";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), TMS_ERROR_DRIVER);
    const std::string what = error.what();
    EXPECT_NE(what.find("synchronize_event"), std::string::npos) << what;
    EXPECT_NE(what.find("backups are kept"), std::string::npos) << what;
  }
  EXPECT_EQ(w.backup_bytes("opt"), backups) << "a backup went before its restore was good";
  EXPECT_THROW(w.engine->pause("opt"), InvalidState) << "pausing over a failed restore";
  EXPECT_THROW(w.engine->resume("opt", ResumeMode::kNonBlocking), InvalidState);
  w.engine->pause("params");  // other tags go on

  w.sim.simulation().set_copies_deferred(false);
  std::vector<Tensor> scribbled = w.opt;
  for (const Tensor& t : scribbled) testing::fill_pattern(t.ptr, t.size, 99);  // a bad copy
  w.engine->wait("opt");  // copies back again, from the kept backups
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
  EXPECT_EQ(w.backup_bytes("opt"), 0u);
  w.engine->pause("opt");
  w.engine->resume(std::nullopt);
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
  EXPECT_TRUE(NonBlockingWorld::intact(w.params));
}

// A failed restore raised by a pause (or resume, or wait on a stream)
// counts as raised for all of its allocations, as when wait() raises it:
// the next wait() copies them back, however many there are.
TEST(NonBlockingResume, AFailureRaisedByAPauseIsRetriedByTheNextWait) {
  for (const bool on_stream : {false, true}) {
    SCOPED_TRACE(on_stream ? "raised by wait_on_stream" : "raised by pause");
    NonBlockingWorld w;
    w.engine->pause("opt");
    w.sim.fail_call(DriverCall::kSynchronizeEvent, 1);
    w.engine->resume("opt", ResumeMode::kNonBlocking);
    w.engine->drain_host_releases();  // the watcher is done with it
    if (on_stream) {
      EXPECT_THROW(w.engine->wait_on_stream("opt", nullptr), Error);
    } else {
      EXPECT_THROW(w.engine->pause("opt"), InvalidState);
    }
    w.sim.simulation().set_copies_deferred(false);
    EXPECT_NO_THROW(w.engine->wait("opt")) << "raised twice instead of retried";
    EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
    EXPECT_EQ(w.backup_bytes("opt"), 0u);
  }
}

TEST(NonBlockingResume, AFailedRestoreCanBeGivenUpByFreeOrDiscardWithoutLeaks) {
  NonBlockingWorld w;
  w.engine->pause(std::nullopt);
  w.sim.fail_call(DriverCall::kSynchronizeEvent, 1);
  w.engine->resume("opt", ResumeMode::kNonBlocking);
  EXPECT_THROW(w.engine->wait("opt"), Error);
  const std::size_t kept = w.backup_bytes("opt");
  w.engine->free(w.opt[0].ptr);
  EXPECT_LT(w.backup_bytes("opt"), kept) << "free gives the kept backup up";
  const std::size_t left = w.backup_bytes("opt");
  w.engine->discard_backup(w.opt[1].ptr);  // stays mapped, contents given up
  EXPECT_LT(w.backup_bytes("opt"), left) << "discard drops the kept backup";
  w.engine->free(w.opt[1].ptr);
  w.engine->free(w.opt[2].ptr);
  w.engine->free(w.params[0].ptr);
  w.engine->drain_host_releases();
  const testing::SimSnapshot after = testing::snapshot(w.sim);
  EXPECT_EQ(after.host, 0u);
  EXPECT_EQ(after.physical, std::vector<std::size_t>{0});
  EXPECT_EQ(after.mapped, 0u);
  EXPECT_EQ(after.reserved, 0u);
}

TEST(NonBlockingResume, ARetryThatFailsTooIsRaisedAndKeepsTheBackups) {
  NonBlockingWorld w;
  w.engine->pause("opt");
  w.sim.fail_call(DriverCall::kSynchronizeEvent, 1);
  w.engine->resume("opt", ResumeMode::kNonBlocking);
  EXPECT_THROW(w.engine->wait("opt"), Error);
  const std::size_t backups = w.backup_bytes("opt");
  w.sim.fail_call(DriverCall::kCopyToDevice, 2);
  EXPECT_THROW(w.engine->wait("opt"), Error);
  EXPECT_EQ(w.backup_bytes("opt"), backups);
  w.engine->wait("opt");
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
}

TEST(NonBlockingResume, FailingToMarkTheCopiesFailsTheResumeAndLeavesEverythingPaused) {
  NonBlockingWorld w;
  w.engine->pause("opt");
  const testing::SimSnapshot paused = testing::snapshot(w.sim);
  for (const DriverCall call : {DriverCall::kCreateEvent, DriverCall::kRecordEvent}) {
    SCOPED_TRACE(std::string(driver_call_name(call)));
    w.sim.fail_call(call, 1);
    EXPECT_THROW(w.engine->resume("opt", ResumeMode::kNonBlocking), DriverError);
    w.engine->drain_host_releases();
    EXPECT_EQ(testing::snapshot(w.sim), paused);
    EXPECT_EQ(w.sim.simulation().live_events(), 0u);
  }
  w.engine->resume("opt", ResumeMode::kNonBlocking);
  w.engine->wait(std::nullopt);
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
}

TEST(NonBlockingResume, CompressedBackupsAreRestoredBeforeItReturns) {
  NonBlockingWorld w;
  const DevicePtr ptr =
      w.engine->allocate(testing::request(3 * kMiB, 0, "opt", testing::compressed_backup()));
  testing::fill_pattern(ptr, 3 * kMiB, 77);
  w.sim.simulation().set_copies_deferred(false);
  w.engine->pause("opt");
  w.sim.simulation().set_copies_deferred(true);
  w.engine->resume("opt", ResumeMode::kNonBlocking);
  EXPECT_TRUE(testing::has_pattern(ptr, 3 * kMiB, 77));
  w.engine->wait("opt");
  EXPECT_TRUE(NonBlockingWorld::intact(w.opt));
}

TEST(NonBlockingResume, TeardownWithARestoreInFlightFinishesItAndLeaksNothing) {
  testing::SimSnapshot after;
  {
    NonBlockingWorld w;
    w.engine->pause(std::nullopt);
    w.engine->resume(std::nullopt, ResumeMode::kNonBlocking);
    w.engine.reset();
    after = testing::snapshot(w.sim);
    EXPECT_EQ(w.sim.simulation().live_events(), 0u);
    EXPECT_EQ(w.sim.simulation().deferred_copies(), 0u);
  }
  EXPECT_EQ(after.host, 0u);
  EXPECT_EQ(after.mapped, 0u);
  EXPECT_EQ(after.reserved, 0u);
}

/// Runs `hook` once, on the thread that armed it, at its first host free
/// after arm(): inside a resume, that is where it gives host backups back,
/// after it handed its restore to the watcher.
class HostFreeHook : public testing::ForwardingDriver {
 public:
  using ForwardingDriver::ForwardingDriver;
  void arm(std::function<void()> hook) {
    hook_ = std::move(hook);
    thread_ = std::this_thread::get_id();
  }
  void host_unregister(void* ptr) override {
    fire();
    ForwardingDriver::host_unregister(ptr);
  }
  void host_free(void* ptr, std::size_t size) override {
    fire();
    ForwardingDriver::host_free(ptr, size);
  }

 private:
  void fire() {
    if (!hook_ || std::this_thread::get_id() != thread_) return;
    std::function<void()> hook = std::move(hook_);
    hook_ = nullptr;
    hook();
  }
  std::function<void()> hook_;
  std::thread::id thread_;
};

// Once the watcher is done with a restore, its records are free to go: the
// resume that started it must not read them after handing it over (its
// statistics and log line). Under ASan a read of a freed record fails here.
TEST(NonBlockingResume, ARecordFreedAsSoonAsItsRestoreIsDoneIsNotReadByTheResume) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 256 * kMiB});
  HostFreeHook driver(sim);
  Engine engine(driver);
  const DevicePtr plain =
      engine.allocate(testing::request(2 * kMiB, 0, "opt", testing::host_backup()));
  const DevicePtr packed =
      engine.allocate(testing::request(2 * kMiB, 0, "opt", testing::compressed_backup()));
  testing::fill_pattern(packed, 2 * kMiB, 7);
  engine.pause("opt");
  std::unique_ptr<Background> free_plain;
  // The compressed backup's host memory goes back on the resuming thread,
  // late in the resume: a free of the restored allocation beside it gets
  // time to finish there, if the restore is done already.
  driver.arm([&] {
    free_plain = std::make_unique<Background>([&] { engine.free(plain); });
    for (int i = 0; i < 200 && !free_plain->done(); ++i) std::this_thread::sleep_for(1ms);
  });
  engine.resume("opt", ResumeMode::kNonBlocking);
  ASSERT_NE(free_plain, nullptr) << "the hook did not run";
  EXPECT_EQ(free_plain->join(), "");
  EXPECT_FALSE(engine.owns(plain));
  EXPECT_TRUE(testing::has_pattern(packed, 2 * kMiB, 7));
  const EngineStats stats = engine.stats();
  ASSERT_EQ(stats.entries.size(), 1u);
  EXPECT_EQ(stats.entries[0].tag, "opt");
  EXPECT_EQ(stats.entries[0].resume_count, 1u);
  engine.free(packed);
}

// Threads resuming without blocking, waiting (on the host and on a stream),
// pausing, reading backups and freeing, over and over: under ASan and TSan
// in CI a use of memory given back under a copy, a data race or a hang
// fails it; the contents must survive every cycle.
TEST(NonBlockingResume, ThreadsResumingWaitingPausingReadingAndFreeingLoseNothing) {
  testing::FaultySim sim({.device_count = 1, .capacity_bytes = 256 * kMiB});
  Engine engine(sim);
  // Not retained: a pause refreshes a retained backup in place, under the
  // reader's lease (documented), which would be a race of the test's own.
  sim.simulation().set_copies_deferred(true);
  constexpr int kTags = 3;
  constexpr int kRounds = 150;
  std::vector<std::vector<Tensor>> tensors(kTags);
  for (int t = 0; t < kTags; ++t) {
    for (int i = 0; i < 3; ++i) {
      const std::size_t size = kMiB + 4096 * i + 7;
      const auto seed = static_cast<std::uint8_t>(10 * t + i);
      const DevicePtr ptr = engine.allocate(
          testing::request(size, 0, "t" + std::to_string(t), testing::host_backup()));
      testing::fill_pattern(ptr, size, seed);
      tensors[t].push_back({ptr, size, seed});
    }
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < kTags; ++t) {
    workers.emplace_back([&, t] {
      const std::string tag = "t" + std::to_string(t);
      for (int round = 0; round < kRounds; ++round) {
        engine.pause(tag);
        engine.resume(tag, ResumeMode::kNonBlocking);
        if (round % 2 == 0) {
          engine.wait(tag);
        } else {
          engine.wait_on_stream(tag, nullptr);
        }
        if (!NonBlockingWorld::intact(tensors[t])) ++wrong;
      }
    });
  }
  // A reader of backups (while paused) and a waiter for everything, beside them.
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      for (const auto& group : tensors) {
        const BackupLease lease = engine.lease_backup(group[0].ptr, group[0].size);
        if (lease.data != nullptr &&
            !testing::has_pattern(reinterpret_cast<std::uintptr_t>(lease.data), group[0].size,
                                  group[0].seed)) {
          ++wrong;
        }
        engine.end_lease(lease.id);
      }
      engine.wait(std::nullopt);
    }
  });
  for (std::thread& worker : workers) worker.join();
  stop.store(true);
  reader.join();
  EXPECT_EQ(wrong.load(), 0);
  // A restore in flight while its allocation is freed: free waits for it.
  engine.pause(std::nullopt);
  engine.resume(std::nullopt, ResumeMode::kNonBlocking);
  for (const auto& group : tensors) {
    for (const Tensor& t : group) engine.free(t.ptr);
  }
  engine.drain_host_releases();
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.mapped_bytes(), 0u);
}

}  // namespace
}  // namespace tms
