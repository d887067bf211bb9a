// Host memory limits: the room read from a (fake) cgroup tree, and a pause
// whose host backups do not fit fails cleanly instead of being OOM-killed.
#include "backup/host_limits.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "common/errors.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

/// Writes `text` to `root` + `path`, creating the directories on the way.
void put(const std::string& root, const std::string& path, const std::string& text) {
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    ::mkdir((root + path.substr(0, slash)).c_str(), 0700);
  }
  std::ofstream(root + path) << text;
}

TEST(HostMemoryRoom, CgroupV2TakesTheTightestAncestorAndCountsPageCacheAsRoom) {
  testing::TempDir root;
  put(root.path(), "/proc/self/cgroup", "0::/job/worker\n");
  put(root.path(), "/proc/meminfo", "MemTotal: 100000000 kB\nMemAvailable: 50000000 kB\n");
  put(root.path(), "/sys/fs/cgroup/job/worker/memory.max", "max\n");
  put(root.path(), "/sys/fs/cgroup/job/worker/memory.current", "100\n");
  put(root.path(), "/sys/fs/cgroup/job/memory.max", "1073741824\n");     // 1 GiB
  put(root.path(), "/sys/fs/cgroup/job/memory.current", "805306368\n");  // 768 MiB
  put(root.path(), "/sys/fs/cgroup/job/memory.stat",
      "anon 1\nactive_file 33554432\ninactive_file 33554432\nshmem 5\n");  // 64 MiB cache
  const auto room = read_host_memory_room(root.path());
  ASSERT_TRUE(room.has_value());
  EXPECT_EQ(room->bytes, 320 * kMiB) << room->source;  // 1024 - (768 - 64)
  EXPECT_NE(room->source.find("/sys/fs/cgroup/job:"), std::string::npos) << room->source;
  EXPECT_NE(room->source.find("memory.max"), std::string::npos) << room->source;
}

TEST(HostMemoryRoom, CgroupV1AndMemAvailable) {
  testing::TempDir root;
  put(root.path(), "/proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/pod\n0::/\n");
  put(root.path(), "/proc/meminfo", "MemAvailable: 1024 kB\n");
  put(root.path(), "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes", "9223372036854771712\n");
  put(root.path(), "/sys/fs/cgroup/memory/pod/memory.usage_in_bytes", "1\n");
  auto room = read_host_memory_room(root.path());
  ASSERT_TRUE(room.has_value());
  EXPECT_EQ(room->bytes, 1024u * 1024) << "no v1 limit: MemAvailable decides";
  EXPECT_NE(room->source.find("MemAvailable"), std::string::npos);
  put(root.path(), "/proc/meminfo", "MemAvailable: 100000000 kB\n");
  put(root.path(), "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes", "536870912\n");
  put(root.path(), "/sys/fs/cgroup/memory/pod/memory.usage_in_bytes", "268435456\n");
  room = read_host_memory_room(root.path());
  ASSERT_TRUE(room.has_value());
  EXPECT_EQ(room->bytes, 256 * kMiB);
  EXPECT_NE(room->source.find("memory.limit_in_bytes"), std::string::npos) << room->source;
}

TEST(HostMemoryRoom, ALevelThatAccountsNoUsageIsNoLimit) {
  // Seen on a sandboxed GPU host: the process's cgroup view says memory.max 0
  // and memory.current 0; nothing enforces that, and taking it at face value
  // refused every CPU backup.
  testing::TempDir root;
  put(root.path(), "/proc/self/cgroup", "0::/sandbox/task\n");
  put(root.path(), "/proc/meminfo", "MemAvailable: 2048 kB\n");
  put(root.path(), "/sys/fs/cgroup/sandbox/task/memory.max", "0\n");
  put(root.path(), "/sys/fs/cgroup/sandbox/task/memory.current", "0\n");
  const auto room = read_host_memory_room(root.path());
  ASSERT_TRUE(room.has_value());
  EXPECT_EQ(room->bytes, 2048u * 1024) << room->source;
  EXPECT_NE(room->source.find("MemAvailable"), std::string::npos) << room->source;
  // The same with usage that is all page cache: a limit of 0 is never real.
  put(root.path(), "/sys/fs/cgroup/sandbox/task/memory.current", "4096\n");
  put(root.path(), "/sys/fs/cgroup/sandbox/task/memory.stat", "active_file 4096\n");
  const auto again = read_host_memory_room(root.path());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->bytes, 2048u * 1024) << again->source;
}

TEST(HostMemoryRoom, ThisProcessHasSome) {
  const auto room = read_host_memory_room("/");
  ASSERT_TRUE(room.has_value()) << "/proc/meminfo is readable on Linux";
  EXPECT_GT(room->bytes, 0u);
}

TEST(HostMemoryRoom, APauseThatWouldNotFitFailsCleanlyWithEverythingActive) {
  SimDriver sim({.capacity_bytes = 256 * kMiB});
  std::size_t room = 12 * kMiB;  // as a cgroup with this much left would say
  EngineOptions options;
  options.host.memory_room = [&room]() -> std::optional<HostMemoryRoom> {
    return HostMemoryRoom{room, "memory cgroup /fake: memory.max 1"};
  };
  Engine engine(sim, options);
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 2; ++i) {
    ptrs.push_back(
        engine.allocate(testing::request(8 * kMiB, -1, "weights", testing::host_backup())));
    testing::fill_pattern(ptrs.back(), 8 * kMiB, static_cast<std::uint8_t>(i + 1));
  }
  try {
    engine.pause("weights");
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    const std::string message = error.what();
    EXPECT_EQ(error.bytes_needed(), 16 * kMiB);
    EXPECT_EQ(error.bytes_free(), 12 * kMiB);
    EXPECT_NE(message.find("16777216 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("12582912 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("memory cgroup /fake"), std::string::npos) << message;
  }
  EXPECT_EQ(sim.host_bytes(), 0u) << "no host memory was faulted in";
  EXPECT_EQ(sim.physical_bytes(0), 16 * kMiB) << "everything still active";
  EXPECT_TRUE(testing::has_pattern(ptrs[0], 8 * kMiB, 1));
  EXPECT_TRUE(testing::has_pattern(ptrs[1], 8 * kMiB, 2));
  room = 16 * kMiB;  // it fits now
  engine.pause("weights");
  engine.resume("weights");
  EXPECT_TRUE(testing::has_pattern(ptrs[0], 8 * kMiB, 1));
  EXPECT_TRUE(testing::has_pattern(ptrs[1], 8 * kMiB, 2));
  for (const DevicePtr ptr : ptrs) engine.free(ptr);
}

TEST(HostMemoryRoom, MemoryKeptOnlyForSpeedIsGivenBackBeforeAPauseIsRefused) {
  SimDriver sim;
  EngineOptions options;
  options.host.background_release = true;  // as the library runs
  // A limit of 20 MiB of host memory, of which what the engine holds is used.
  options.host.memory_room = [&sim]() -> std::optional<HostMemoryRoom> {
    const std::size_t limit = 20 * kMiB;
    return HostMemoryRoom{limit > sim.host_bytes() ? limit - sim.host_bytes() : 0, "fake limit"};
  };
  Engine engine(sim, options);
  engine.set_retain_cpu_backup(true);  // freed allocations' host blocks go to the pool
  const DevicePtr first =
      engine.allocate(testing::request(10 * kMiB, -1, "t", testing::host_backup()));
  engine.pause("t");
  engine.resume("t");
  engine.free(first);  // its 10 MiB backup block is pooled now
  ASSERT_EQ(sim.host_bytes(), 10 * kMiB);
  // Too large for the pooled block; fits once it is gone.
  const DevicePtr second =
      engine.allocate(testing::request(14 * kMiB, -1, "t", testing::host_backup()));
  testing::fill_pattern(second, 14 * kMiB, 3);
  engine.pause("t");
  engine.resume("t");
  EXPECT_TRUE(testing::has_pattern(second, 14 * kMiB, 3));
  engine.free(second);
}

}  // namespace
}  // namespace tms
