// Compressed host backups through the engine on the simulated driver (which
// runs the CPU reference codec in place of the kernels): exact contents,
// the host memory they hold, the bounded device scratch, and all-or-nothing
// under every driver call failing in turn.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "codec/format.h"
#include "codec_data.h"
#include "common/errors.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

struct Contents {
  DevicePtr ptr;
  std::vector<std::uint8_t> bytes;
};

/// An engine on a two-device simulation with compressed weights on both
/// devices (one spans two batches), incompressible data with compression
/// asked for, and a plain host backup.
struct CompressedWorld {
  testing::FaultySim sim{{.device_count = 2, .capacity_bytes = 256 * kMiB}};
  std::unique_ptr<Engine> engine = [this] {
    EngineOptions options;
    options.host.register_chunk_bytes = kMiB;  // copies split at registered chunks
    options.host.prepare_threads = 2;
    options.copies.chunk_bytes = 768 * 1024;
    return std::make_unique<Engine>(sim, options);
  }();
  std::vector<Contents> tracked;

  explicit CompressedWorld(bool large = true) {
    // Generated once: the sweeps build hundreds of worlds.
    static const auto big =
        testing::normal_weights(codec::kBatchBytes / 2 + 2 * kMiB, 0.02f, true, 1);
    static const auto weights = testing::normal_weights(2 * kMiB, 0.02f, true, 2);
    static const auto noise = testing::random_bytes(2 * kMiB + 1, 3);
    if (large) {
      add(codec::kBatchBytes + 3 * kMiB + 10, 0, true, big);
      add(3 * kMiB + 6, 1, true, weights);
      add(2 * kMiB + 1, 0, true, noise);
      add(kMiB, 1, false, noise);
    } else {
      add(kMiB + 6, 1, true, weights);
      add(64 * 1024 + 1, 0, true, noise);
      add(64 * 1024, 1, false, noise);
    }
    // The copy streams of both devices exist from the first pause on.
    engine->pause("weights");
    engine->resume("weights");
  }

  void add(std::size_t size, int device, bool compress, const std::vector<std::uint8_t>& data) {
    const DevicePtr ptr = engine->allocate(testing::request(
        size, device, "weights", compress ? testing::compressed_backup() : testing::host_backup()));
    std::memcpy(reinterpret_cast<void*>(ptr), data.data(), size);
    tracked.push_back({ptr, std::vector<std::uint8_t>(
                                data.begin(), data.begin() + static_cast<std::ptrdiff_t>(size))});
  }

  [[nodiscard]] bool device_contents_exact() const {
    for (const Contents& c : tracked) {
      if (std::memcmp(reinterpret_cast<const void*>(c.ptr), c.bytes.data(), c.bytes.size()) != 0) {
        return false;
      }
    }
    return true;
  }

  [[nodiscard]] std::size_t backup_bytes() const {
    std::size_t bytes = 0;
    for (const TagDeviceStats& entry : engine->stats().entries) bytes += entry.backup_bytes;
    return bytes;
  }
};

TEST(CompressedBackup, PauseResumeCyclesAreExactAndHoldLessHostMemory) {
  CompressedWorld world;
  const std::size_t physical0 = world.sim.physical_bytes(0);
  for (int cycle = 0; cycle < 3; ++cycle) {
    world.engine->pause("weights");
    // Weights take under 0.75 of their size; random data at most a small
    // header more than its size; the plain backup its size.
    const std::size_t weights = world.tracked[0].bytes.size() + world.tracked[1].bytes.size();
    const std::size_t others = world.tracked[2].bytes.size() + world.tracked[3].bytes.size();
    EXPECT_LT(world.backup_bytes(), weights * 3 / 4 + others + others / 1000 + 4096);
    EXPECT_EQ(world.sim.physical_bytes(0), 0u) << "no device scratch is held while paused";
    EXPECT_EQ(world.sim.physical_bytes(1), 0u);
    world.engine->resume("weights");
    EXPECT_TRUE(world.device_contents_exact()) << "cycle " << cycle;
    EXPECT_EQ(world.sim.physical_bytes(0), physical0) << "scratch given back after resume";
  }
}

TEST(CompressedBackup, IsNeverRetainedAndCannotBeReadInPlace) {
  CompressedWorld world(/*large=*/false);
  world.engine->set_retain_cpu_backup(true);
  world.engine->pause("weights");
  EXPECT_THROW((void)world.engine->backup_pointer(world.tracked[0].ptr, 16), InvalidState);
  // The plain backup next to it stays readable in place.
  const Contents& plain = world.tracked.back();
  const std::uint8_t* backup = world.engine->backup_pointer(plain.ptr, plain.bytes.size());
  ASSERT_NE(backup, nullptr);
  EXPECT_EQ(std::memcmp(backup, plain.bytes.data(), plain.bytes.size()), 0);
  world.engine->resume("weights");
  EXPECT_EQ(world.engine->backup_pointer(world.tracked[0].ptr, 16), nullptr)
      << "a compressed backup is given back at resume even with retention on";
  EXPECT_NE(world.engine->backup_pointer(plain.ptr, 16), nullptr);
  EXPECT_TRUE(world.device_contents_exact());
}

TEST(CompressedBackup, DeviceScratchIsBoundedWhateverTheAllocationSize) {
  // The scratch of a pause is a table of 4 bytes per chunk plus one staging
  // slot per copy lane, whatever the size paused.
  CompressedWorld world;
  const std::size_t before = world.sim.physical_bytes(0);
  world.sim.set_capacity(before + 2 * codec::max_batch_bytes(codec::kBatchBytes) + 2 * kMiB + kMiB);
  world.engine->pause("weights");
  world.engine->resume("weights");
  EXPECT_TRUE(world.device_contents_exact());
  // One granule too little for the scratch: the pause fails cleanly.
  world.sim.set_capacity(before + kMiB);
  EXPECT_THROW(world.engine->pause("weights"), OutOfMemory);
  EXPECT_TRUE(world.device_contents_exact());
  EXPECT_EQ(world.backup_bytes(), 0u);
}

TEST(CompressedBackup, NoMemoryForTheResumeScratchIsTheResumeOutOfMemoryError) {
  // The decoding scratch is created once the allocations are mapped: the
  // creates after theirs, device 0's, then device 1's. Without memory for
  // it, the resume rolls back and says so as any resume out of memory does.
  for (const int device : {0, 1}) {
    SCOPED_TRACE("scratch of device " + std::to_string(device));
    CompressedWorld world;
    world.engine->pause("weights");
    const testing::SimSnapshot before = testing::snapshot(world.sim);
    const std::size_t backup_before = world.backup_bytes();
    world.sim.fail_call(DriverCall::kCreatePhysical,
                        static_cast<int>(world.tracked.size()) + 1 + device,
                        InjectedFailure::kOutOfMemory);
    try {
      world.engine->resume("weights");
      ADD_FAILURE() << "resumed without memory for the scratch";
    } catch (const OutOfMemory& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("resume of tag 'weights' needs"), std::string::npos) << message;
      EXPECT_NE(message.find("on device " + std::to_string(device)), std::string::npos) << message;
      EXPECT_NE(message.find("everything stays paused with its backup"), std::string::npos)
          << message;
    }
    EXPECT_EQ(testing::snapshot(world.sim), before) << "the resume gave back what it took";
    EXPECT_EQ(world.backup_bytes(), backup_before) << "the backups are intact";
    for (const TagDeviceStats& entry : world.engine->stats().entries) {
      EXPECT_EQ(entry.active_bytes, 0u) << "everything stays paused";
    }
    world.engine->resume("weights");
    EXPECT_TRUE(world.device_contents_exact());
  }
  // Out of memory for real: the error counts the scratch in what device 0
  // needs, and measures what is free once the rollback gave everything back.
  CompressedWorld world;
  const std::size_t physical0 = world.sim.physical_bytes(0);
  world.engine->pause("weights");
  world.sim.set_capacity(physical0 + kMiB);
  try {
    world.engine->resume("weights");
    ADD_FAILURE() << "resumed without memory for the scratch";
  } catch (const OutOfMemory& error) {
    EXPECT_GT(error.bytes_needed(), physical0 + kMiB);
    EXPECT_EQ(error.bytes_free(), physical0 + kMiB);
    EXPECT_NE(std::string(error.what()).find("stays paused"), std::string::npos) << error.what();
  }
  world.sim.set_capacity(256 * kMiB);
  world.engine->resume("weights");
  EXPECT_TRUE(world.device_contents_exact());
}

// Every driver call a compressed pause or resume makes fails once, in turn:
// the operation fails with nothing changed and a retry succeeds, or (giving
// something back) it completes and the parked resource goes at the next one.
void sweep(bool resume) {
  std::vector<std::size_t> calls(static_cast<std::size_t>(DriverCall::kCount));
  {
    CompressedWorld world(/*large=*/false);
    if (resume) world.engine->pause("weights");
    for (std::size_t c = 0; c < calls.size(); ++c)
      calls[c] = world.sim.call_count(static_cast<DriverCall>(c));
    resume ? world.engine->resume("weights") : world.engine->pause("weights");
    for (std::size_t c = 0; c < calls.size(); ++c)
      calls[c] = world.sim.call_count(static_cast<DriverCall>(c)) - calls[c];
  }
  EXPECT_GE(calls[static_cast<std::size_t>(DriverCall::kCodec)], 2u) << "the codec ran";
  for (std::size_t c = 0; c < calls.size(); ++c) {
    const auto call = static_cast<DriverCall>(c);
    const bool releases = call == DriverCall::kReleasePhysical ||
                          call == DriverCall::kFreeReservation || call == DriverCall::kHostFree ||
                          call == DriverCall::kHostUnregister;
    for (std::size_t nth = 1; nth <= calls[c]; ++nth) {
      for (const InjectedFailure failure :
           {InjectedFailure::kDriverError, InjectedFailure::kOutOfMemory}) {
        SCOPED_TRACE(std::string(resume ? "resume: " : "pause: ") +
                     std::string(driver_call_name(call)) + " #" + std::to_string(nth));
        CompressedWorld world(/*large=*/false);
        if (resume) world.engine->pause("weights");
        const testing::SimSnapshot before = testing::snapshot(world.sim);
        const std::size_t backup_before = world.backup_bytes();
        world.sim.fail_call(call, static_cast<int>(nth), failure);
        bool failed = false;
        try {
          resume ? world.engine->resume("weights") : world.engine->pause("weights");
        } catch (const Error&) {
          failed = true;
        }
        if (failed) {
          EXPECT_FALSE(releases) << "giving back must not fail the operation";
          EXPECT_EQ(testing::snapshot(world.sim), before) << "accounting changed";
          EXPECT_EQ(world.backup_bytes(), backup_before) << "backups changed";
          if (!resume) {
            EXPECT_TRUE(world.device_contents_exact());
          }
          world.sim.clear_failures();
          EXPECT_NO_THROW(resume ? world.engine->resume("weights")
                                 : world.engine->pause("weights"));
        } else {
          // Past the point of no return (giving something back, also the
          // unmap of the scratch): the operation completes and parks it.
          EXPECT_TRUE(releases || call == DriverCall::kUnmap)
              << "the injected failure was swallowed";
          EXPECT_GT(world.engine->stats().deferred_releases, 0u) << "what failed is parked";
        }
        if (!resume) world.engine->resume("weights");
        EXPECT_TRUE(world.device_contents_exact()) << "contents after the operation";
        world.engine->pause("no-such-tag");  // gives back what was parked
        EXPECT_EQ(world.engine->stats().deferred_releases, 0u);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

TEST(CompressedBackup, TheCodecIsReadiedByTheAllocationNotByTheFirstPause) {
  // Room for the resume's decoding scratch.
  testing::FaultySim sim({.device_count = 1, .capacity_bytes = 512 * kMiB});
  Engine engine(sim);
  std::size_t before = sim.call_count(DriverCall::kCodec);
  const DevicePtr ptr =
      engine.allocate(testing::request(kMiB, 0, "w", testing::compressed_backup()));
  EXPECT_EQ(sim.call_count(DriverCall::kCodec), before + 1) << "the allocation readies the codec";
  before = sim.call_count(DriverCall::kCodec);
  const DevicePtr plain =
      engine.allocate(testing::request(kMiB, 0, "plain", testing::host_backup()));
  EXPECT_EQ(sim.call_count(DriverCall::kCodec), before) << "other kinds do not";
  // Readying is best effort: where it fails (inside a graph capture, say)
  // the allocation goes on, and its pause and resume work.
  sim.fail_call(DriverCall::kCodec, 1);
  const DevicePtr late =
      engine.allocate(testing::request(kMiB, 0, "w", testing::compressed_backup()));
  testing::fill_pattern(late, kMiB, 9);
  engine.pause("w");
  engine.resume("w");
  EXPECT_TRUE(testing::has_pattern(late, kMiB, 9));
  for (const DevicePtr each : {ptr, plain, late}) engine.free(each);
}

TEST(CompressedBackup, EveryDriverCallFailingInPauseLeavesEverythingActive) { sweep(false); }

TEST(CompressedBackup, EveryDriverCallFailingInResumeLeavesEverythingPaused) { sweep(true); }

}  // namespace
}  // namespace tms
