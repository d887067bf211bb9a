// Reading a host backup while other threads resume, free or discard it: the
// reader's lease keeps the bytes valid (Engine::lease_backup), and the memory
// still goes back once the lease ends. Run under AddressSanitizer and
// ThreadSanitizer in CI: a reader touching memory given back under it is a
// use-after-free there, and a crash anywhere.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

TEST(BackupLease, ReadsStayValidWhileOtherThreadsResumeFreeAndDiscard) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
  Engine engine(sim);
  constexpr std::size_t kSize = 64 * 1024 + 3;
  constexpr int kIterations = 1000;
  int wrong = 0;
  int read = 0;
  for (int i = 0; i < kIterations; ++i) {
    const auto seed = static_cast<std::uint8_t>(i);
    const DevicePtr ptr =
        engine.allocate(testing::request(kSize, 0, "lease", testing::host_backup()));
    testing::fill_pattern(ptr, kSize, seed);
    engine.pause("lease");
    // Every other round the reader holds its lease before the main thread
    // lets go of the backup; in the others the two race.
    const bool lease_first = i % 2 == 0;
    std::atomic<bool> leased{false};
    bool got = false;
    bool intact = true;
    std::thread reader([&] {
      const BackupLease lease = engine.lease_backup(ptr + 16, kSize - 16);
      leased.store(true);
      got = lease.data != nullptr;
      if (got) {
        for (int pass = 0; pass < 3 && intact; ++pass) {
          std::this_thread::yield();  // let the other thread act meanwhile
          for (std::size_t k = 0; k + 16 < kSize && intact; k += 4093) {
            intact =
                lease.data[k] == static_cast<std::uint8_t>(seed + (k + 16) * 31 + ((k + 16) >> 12));
          }
        }
      }
      engine.end_lease(lease.id);
    });
    if (lease_first) {
      while (!leased.load()) std::this_thread::yield();
    }
    switch (i % 3) {
      case 0:
        engine.resume("lease");
        EXPECT_TRUE(testing::has_pattern(ptr, kSize, seed));
        engine.free(ptr);
        break;
      case 1:
        engine.free(ptr);
        break;
      default:
        engine.discard_backup(ptr);
        engine.free(ptr);
        break;
    }
    reader.join();
    if (lease_first) {
      EXPECT_TRUE(got) << "round " << i << ": the lease came first";
    }
    if (got) ++read;
    if (!intact) ++wrong;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_GE(read, kIterations / 2);
  engine.drain_host_releases();
  EXPECT_EQ(sim.host_bytes(), 0u) << "every backup went back once its lease ended";
  EXPECT_EQ(engine.stats().entries.empty() ? 0u : engine.stats().entries[0].allocations, 0u);
}

TEST(BackupLease, AResumeLeavesALeasedBackupToItsLastLease) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
  Engine engine(sim);
  const DevicePtr ptr = engine.allocate(testing::request(kMiB, 0, "w", testing::host_backup()));
  testing::fill_pattern(ptr, kMiB, 9);
  engine.pause("w");
  const BackupLease first = engine.lease_backup(ptr, kMiB);
  const BackupLease second = engine.lease_backup(ptr, kMiB);
  ASSERT_NE(first.data, nullptr);
  EXPECT_EQ(first.data, second.data) << "both read the one backup";
  EXPECT_NE(first.id, second.id);
  engine.resume("w");
  EXPECT_EQ(engine.lease_backup(ptr, kMiB).data, nullptr) << "the record let go of it";
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(first.data), kMiB, 9));
  const std::size_t held = sim.host_bytes();
  EXPECT_GE(held, kMiB) << "still held by the leases";
  engine.end_lease(first.id);
  engine.end_lease(first.id);  // ending twice is harmless
  engine.end_lease(0);
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(second.data), kMiB, 9));
  engine.end_lease(second.id);
  engine.drain_host_releases();
  EXPECT_EQ(sim.host_bytes(), 0u);
  engine.free(ptr);
}

TEST(BackupLease, CompressedBackupsCannotBeReadInPlace) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 256 * kMiB});  // the codec's scratch
  Engine engine(sim);
  const DevicePtr packed =
      engine.allocate(testing::request(kMiB, 0, "c", testing::compressed_backup()));
  engine.pause("c");
  EXPECT_THROW((void)engine.lease_backup(packed, 16), InvalidState);
  EXPECT_THROW((void)engine.lease_backup(packed, 2 * kMiB), InvalidArgument) << "past the end";
  EXPECT_EQ(engine.lease_backup(0x1000, 8).id, 0u) << "not engine memory";
  engine.free(packed);
}

}  // namespace
}  // namespace tms

namespace tms {
namespace {

// An engine torn down while a reader still holds a lease: the teardown lets
// go of every backup, the lease's memory goes back as the engine's leases
// go, before the host memory they came from (no leak, no use after free
// under AddressSanitizer).
TEST(BackupLease, TeardownWithLeasesAliveGivesEverythingBack) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
  {
    Engine engine(sim);
    engine.set_retain_cpu_backup(true);
    const DevicePtr paused =
        engine.allocate(testing::request(kMiB, 0, "p", testing::host_backup()));
    const DevicePtr kept = engine.allocate(testing::request(kMiB, 0, "k", testing::host_backup()));
    testing::fill_pattern(paused, kMiB, 1);
    testing::fill_pattern(kept, kMiB, 2);
    engine.pause(std::nullopt);
    engine.resume("k");  // retained: an active allocation's backup
    const BackupLease on_paused = engine.lease_backup(paused, kMiB);
    const BackupLease on_retained = engine.lease_backup(kept, kMiB);
    ASSERT_NE(on_paused.data, nullptr);
    ASSERT_NE(on_retained.data, nullptr);
    EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(on_retained.data), kMiB, 2));
    (void)engine.lease_backup(paused, 16);  // never ended
  }
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.reserved_bytes(), 0u);
}

// A retained backup leased while retention is turned off and its allocation
// freed: the lease keeps it readable, its last end gives it back.
TEST(BackupLease, ARetainedBackupLeasedAcrossFreeGoesBackWithItsLease) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 64 * kMiB});
  Engine engine(sim);
  engine.set_retain_cpu_backup(true);
  const DevicePtr ptr = engine.allocate(testing::request(kMiB, 0, "r", testing::host_backup()));
  testing::fill_pattern(ptr, kMiB, 5);
  engine.pause("r");
  engine.resume("r");
  const BackupLease lease = engine.lease_backup(ptr + 8, kMiB - 8);
  ASSERT_NE(lease.data, nullptr);
  engine.pause("r");  // refreshed in place: the same bytes under the lease
  const BackupLease again = engine.lease_backup(ptr + 8, 8);
  EXPECT_EQ(again.data, lease.data) << "same host address every cycle";
  engine.end_lease(again.id);
  engine.resume("r");
  engine.set_retain_cpu_backup(false);
  engine.free(ptr);
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(lease.data) - 8, kMiB, 5));
  engine.drain_host_releases();
  EXPECT_GE(sim.host_bytes(), kMiB) << "held by the lease";
  engine.end_lease(lease.id);
  engine.drain_host_releases();
  engine.trim_host_memory();
  EXPECT_EQ(sim.host_bytes(), 0u);
}

}  // namespace
}  // namespace tms

namespace tms {
namespace {

// Every operation that touches a backup at once: pause and resume of two
// tags, free of paused and resumed allocations of a third, discard, stats,
// and readers leasing whatever is there and reading it. For
// ThreadSanitizer and AddressSanitizer: no race, no use after free, no
// deadlock; and a lease shows its allocation's pattern (or zeros, once a
// discarded backup's allocation was resumed without contents and paused).
TEST(BackupLease, LeasesRaceEveryOperationThatLetsGoOfABackup) {
  SimDriver sim({.device_count = 1, .capacity_bytes = 256 * kMiB});
  Engine engine(sim);
  constexpr std::size_t kSize = 256 * 1024 + 5;
  constexpr int kSlots = 6;  // 0-3: tags "a" and "b"; 4-5: tag "c", freed and made again
  std::atomic<DevicePtr> slots[kSlots];
  auto tag_of = [](int slot) { return std::string(slot >= 4 ? "c" : slot % 2 == 0 ? "a" : "b"); };
  auto make = [&](int slot) {
    const DevicePtr ptr =
        engine.allocate(testing::request(kSize, 0, tag_of(slot), testing::host_backup()));
    testing::fill_pattern(ptr, kSize, static_cast<std::uint8_t>(slot));
    return ptr;
  };
  for (int s = 0; s < kSlots; ++s) slots[s].store(make(s));
  std::atomic<bool> stop{false};
  std::atomic<int> leased{0};
  std::atomic<int> torn{0};
  std::vector<std::thread> threads;
  for (const char* tag : {"a", "b"}) {
    threads.emplace_back([&, tag] {
      while (!stop.load()) {
        engine.pause(tag);
        engine.resume(tag);
      }
    });
  }
  threads.emplace_back([&] {  // tag "c": pause, then free paused or resumed, make again
    for (int round = 0; !stop.load(); ++round) {
      engine.pause("c");
      std::this_thread::yield();  // let readers lease
      if (round % 2 == 0) engine.resume("c");
      const int s = 4 + round % 2;
      engine.free(slots[s].load());
      if (round % 2 != 0) engine.resume("c");
      slots[s].store(make(s));
    }
  });
  threads.emplace_back([&] {  // discards what is paused, reads stats
    for (int round = 0; !stop.load(); ++round) {
      try {
        engine.discard_backup(slots[round % kSlots].load());
      } catch (const Error&) {  // active, or freed meanwhile
      }
      (void)engine.stats();
      std::this_thread::yield();
    }
  });
  for (int reader = 0; reader < 2; ++reader) {
    threads.emplace_back([&, reader] {
      for (int round = 0; !stop.load(); ++round) {
        const int s = (round + reader) % kSlots;
        BackupLease lease{};
        try {
          lease = engine.lease_backup(slots[s].load(), kSize);
        } catch (const Error&) {
          continue;
        }
        if (lease.data == nullptr) continue;
        ++leased;
        std::this_thread::yield();
        for (std::size_t k = 0; k < kSize; k += 4099) {
          // Slots 4 and 5 may swap addresses when made again.
          const auto want = static_cast<std::uint8_t>(s + k * 31 + (k >> 12));
          const auto swapped = static_cast<std::uint8_t>((s ^ 1) + k * 31 + (k >> 12));
          const std::uint8_t got = lease.data[k];
          if (got != want && got != 0 && !(s >= 4 && got == swapped)) {
            ++torn;
            break;
          }
        }
        engine.end_lease(lease.id);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  EXPECT_GT(leased.load(), 0);
  EXPECT_EQ(torn.load(), 0);
  for (auto& slot : slots) engine.free(slot.load());
  engine.drain_host_releases();
  EXPECT_EQ(sim.host_bytes(), 0u);
}

}  // namespace
}  // namespace tms
