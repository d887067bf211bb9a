// How much more host memory this process can fault in before the kernel's
// OOM killer ends it: the room left under its memory cgroup (v2 memory.max
// minus memory.current of its cgroup and every ancestor; v1
// memory.limit_in_bytes minus memory.usage_in_bytes) and the system's
// MemAvailable, whichever is smaller. Page cache charged to a cgroup
// (active_file + inactive_file in memory.stat) counts as room: the kernel
// reclaims it before it kills. Host backups check this before faulting in
// fresh memory, so a backup that cannot fit fails the pause with
// OutOfMemory instead of getting the process killed.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace tms {

struct HostMemoryRoom {
  std::size_t bytes = 0;
  std::string source;  ///< where the figure comes from, for messages
};

/// Where HostMemory asks; tests inject their own.
using HostMemoryRoomSource = std::function<std::optional<HostMemoryRoom>()>;

/// The room as read from the files under `root` ("/" for this process;
/// tests pass a directory that mimics /proc and /sys/fs/cgroup). nullopt
/// when none of the files can be read.
std::optional<HostMemoryRoom> read_host_memory_room(const std::string& root);

}  // namespace tms
