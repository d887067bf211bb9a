// Host memory lifecycle: when a non-retaining resume returns, the host
// memory of every backup it restored is back with the OS (the simulated
// driver's accounting, and the process's real anonymous RSS: the simulated
// driver's host memory is anonymous mmap memory, of either kind), with the
// background releaser on as the library runs it; compressed backups too.
// A retained backup stays. A release that fails after the commit does not
// fail the resume and is retried.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

#include "codec_data.h"
#include "core/engine.h"
#include "faulty_sim.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

/// RssAnon of this process in bytes, from /proc/self/status.
std::size_t anonymous_rss() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "RssAnon:") {
      std::size_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(4096, '\n');
  }
  ADD_FAILURE() << "no RssAnon in /proc/self/status";
  return 0;
}

std::size_t page_rounded(std::size_t bytes) { return (bytes + 4095) / 4096 * 4096; }

/// Background release on, as the library runs; several registered chunks
/// per large backup, so that unregistering and unmapping run on two threads.
EngineOptions lifecycle_options() {
  EngineOptions options;
  options.host.background_release = true;
  options.host.register_chunk_bytes = 8 * kMiB;
  options.host.small_request_bytes = 16 * kMiB;
  return options;
}

struct Layout {
  const char* name;
  std::size_t count;
  std::size_t size;
  HostMemoryKind kind;
};

void PrintTo(const Layout& layout, std::ostream* out) { *out << layout.name; }

class HostLifecycle : public ::testing::TestWithParam<Layout> {
 protected:
  AllocationRequest request(const std::string& tag) const {
    AllocationRequest made;
    made.tag = tag;
    made.size = GetParam().size;
    made.policy = testing::host_backup(GetParam().kind);
    return made;
  }
};

TEST_P(HostLifecycle, NonRetainingResumeGivesTheBackupBackBeforeItReturns) {
  const Layout& layout = GetParam();
  testing::FaultySim sim;
  Engine engine(sim, lifecycle_options());
  std::vector<DevicePtr> ptrs;
  for (std::size_t i = 0; i < layout.count; ++i) {
    ptrs.push_back(engine.allocate(request("weights")));
    testing::fill_pattern(ptrs.back(), layout.size, static_cast<std::uint8_t>(i + 1));
  }
  const std::size_t backed_up = layout.count * layout.size;
  constexpr std::size_t kSlack = 8 * kMiB;  // the test's own heap moves a little
  for (int cycle = 0; cycle < 3; ++cycle) {
    engine.pause("weights");
    ASSERT_GE(sim.host_bytes(), backed_up);
    const std::size_t paused_rss = anonymous_rss();
    engine.resume("weights");
    // Read at once: nothing may be left for a background thread to finish.
    const std::size_t host_after = sim.host_bytes();
    const std::size_t rss_after = anonymous_rss();
    EXPECT_EQ(host_after, 0u) << "cycle " << cycle;
    EXPECT_EQ(sim.registered_host_ranges(), 0u) << "cycle " << cycle;
    EXPECT_LE(rss_after + backed_up, paused_rss + kSlack)
        << "cycle " << cycle << ": RssAnon " << paused_rss << " -> " << rss_after;
    for (std::size_t i = 0; i < layout.count; ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs[i], layout.size, static_cast<std::uint8_t>(i + 1)))
          << "allocation " << i << ", cycle " << cycle;
    }
  }
  EXPECT_EQ(engine.stats().deferred_releases, 0u);
  for (DevicePtr ptr : ptrs) engine.free(ptr);
}

TEST_P(HostLifecycle, ResumeOfOneTagGivesBackAllOfItsHostMemory) {
  // Paused together, so one acquire serves both tags: small backups of one
  // tag must not share host blocks with the other's.
  const Layout& layout = GetParam();
  testing::FaultySim sim;
  Engine engine(sim, lifecycle_options());
  std::vector<DevicePtr> a;
  std::vector<DevicePtr> b;
  for (std::size_t i = 0; i < layout.count; ++i) {
    a.push_back(engine.allocate(request("a")));
    b.push_back(engine.allocate(request("b")));
    testing::fill_pattern(b.back(), layout.size, static_cast<std::uint8_t>(i + 7));
  }
  engine.pause(std::nullopt);
  engine.resume("a");
  EXPECT_EQ(sim.host_bytes(), layout.count * page_rounded(layout.size))
      << "only b's backups are left";
  engine.resume("b");
  EXPECT_EQ(sim.host_bytes(), 0u);
  for (std::size_t i = 0; i < layout.count; ++i) {
    EXPECT_TRUE(testing::has_pattern(b[i], layout.size, static_cast<std::uint8_t>(i + 7)));
    engine.free(a[i]);
    engine.free(b[i]);
  }
}

TEST_P(HostLifecycle, RetainedBackupStaysAfterResume) {
  const Layout& layout = GetParam();
  testing::FaultySim sim;
  Engine engine(sim, lifecycle_options());
  engine.set_retain_cpu_backup(true);
  const DevicePtr ptr = engine.allocate(request("weights"));
  testing::fill_pattern(ptr, layout.size, 3);
  engine.pause("weights");
  engine.resume("weights");
  EXPECT_GE(sim.host_bytes(), layout.size) << "a retained backup is kept";
  const std::uint8_t* backup = engine.backup_pointer(ptr, layout.size);
  ASSERT_NE(backup, nullptr);
  EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(backup), layout.size, 3));
  engine.set_retain_cpu_backup(false);
  engine.pause("weights");
  engine.resume("weights");  // the first resume that does not retain gives it back
  EXPECT_EQ(sim.host_bytes(), 0u);
  engine.free(ptr);
}

// Large: a block each, several registered chunks (the unregistering and
// unmapping threads both work). Small: backups packed into shared blocks.
INSTANTIATE_TEST_SUITE_P(
    Layouts, HostLifecycle,
    ::testing::Values(Layout{"pinned_large", 2, 40 * kMiB + 5, HostMemoryKind::kPinned},
                      Layout{"mmap_large", 2, 40 * kMiB + 5, HostMemoryKind::kMmap},
                      Layout{"pinned_small", 40, 2 * kMiB - 100, HostMemoryKind::kPinned},
                      Layout{"mmap_small", 40, 2 * kMiB - 100, HostMemoryKind::kMmap}),
    [](const auto& test_info) { return std::string(test_info.param.name); });

TEST(HostLifecycleCompressed, CompressedBackupsAreGivenBackBeforeResumeReturns) {
  static const std::vector<std::uint8_t> weights =
      testing::normal_weights(6 * kMiB, 0.02f, /*bf16=*/true, 4);  // 12 MiB of bf16
  for (const HostMemoryKind kind : {HostMemoryKind::kPinned, HostMemoryKind::kMmap}) {
    testing::FaultySim sim;
    EngineOptions options = lifecycle_options();
    options.host.register_chunk_bytes = kMiB;
    Engine engine(sim, options);
    AllocationRequest request;
    request.tag = "weights";
    request.size = weights.size();
    request.policy = testing::compressed_backup(kind);
    const DevicePtr ptr = engine.allocate(request);
    std::memcpy(reinterpret_cast<void*>(ptr), weights.data(), weights.size());
    for (int cycle = 0; cycle < 2; ++cycle) {
      engine.pause("weights");
      ASSERT_GT(sim.host_bytes(), 0u);
      engine.resume("weights");
      EXPECT_EQ(sim.host_bytes(), 0u) << "cycle " << cycle;
      EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(ptr), weights.data(), weights.size()), 0);
    }
    engine.free(ptr);
  }
}

struct LateFailure {
  const char* name;
  DriverCall call;
  int nth;
};

void PrintTo(const LateFailure& failure, std::ostream* out) { *out << failure.name; }

class ReleaseFailureAfterCommit : public ::testing::TestWithParam<LateFailure> {};

TEST_P(ReleaseFailureAfterCommit, DoesNotFailTheResumeAndIsRetried) {
  testing::FaultySim sim;
  EngineOptions options = lifecycle_options();
  options.host.register_chunk_bytes = kMiB;  // many chunks in the one shared block
  Engine engine(sim, options);
  constexpr std::size_t kSize = 5 * kMiB + 3;
  AllocationRequest request;
  request.tag = "weights";
  request.size = kSize;
  request.policy = testing::host_backup();
  const DevicePtr a = engine.allocate(request);
  const DevicePtr b = engine.allocate(request);
  testing::fill_pattern(a, kSize, 1);
  testing::fill_pattern(b, kSize, 2);
  engine.pause("weights");
  sim.fail_call(GetParam().call, GetParam().nth);
  EXPECT_NO_THROW(engine.resume("weights"));
  EXPECT_TRUE(testing::has_pattern(a, kSize, 1)) << "active with its contents";
  EXPECT_TRUE(testing::has_pattern(b, kSize, 2));
  EXPECT_EQ(engine.stats().deferred_releases, 1u) << "the block is kept";
  EXPECT_GT(sim.host_bytes(), 0u);
  EXPECT_LT(sim.host_bytes(), kSize) << "the rest was given back";
  engine.pause("no-such-tag");  // any operation retries
  EXPECT_EQ(engine.stats().deferred_releases, 0u);
  EXPECT_EQ(sim.host_bytes(), 0u);
  EXPECT_EQ(sim.registered_host_ranges(), 0u);
  engine.free(a);
  engine.free(b);
}

INSTANTIATE_TEST_SUITE_P(
    Calls, ReleaseFailureAfterCommit,
    ::testing::Values(LateFailure{"first_unregister", DriverCall::kHostUnregister, 1},
                      LateFailure{"later_unregister", DriverCall::kHostUnregister, 4},
                      LateFailure{"first_unmap", DriverCall::kHostFree, 1},
                      LateFailure{"later_unmap", DriverCall::kHostFree, 9}),
    [](const auto& test_info) { return std::string(test_info.param.name); });

}  // namespace
}  // namespace tms
