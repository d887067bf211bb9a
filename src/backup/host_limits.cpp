#include "backup/host_limits.h"

#include <cstdint>
#include <fstream>
#include <sstream>

namespace tms {
namespace {

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A file holding one number; nullopt for "max", absent or unreadable.
std::optional<std::uint64_t> read_number(const std::string& path) {
  const std::optional<std::string> text = read_text(path);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::uint64_t value = 0;
  if (!(in >> value)) return std::nullopt;  // "max": no limit
  return value;
}

/// The value of `key` in a "key value" file (memory.stat, /proc/meminfo).
std::optional<std::uint64_t> read_field(const std::string& path, const std::string& key) {
  const std::optional<std::string> text = read_text(path);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string name;
  std::uint64_t value = 0;
  while (in >> name >> value) {
    if (name == key) return value;
    std::string rest;
    std::getline(in, rest);  // the " kB" of /proc/meminfo
  }
  return std::nullopt;
}

struct CgroupFiles {
  const char* limit;
  const char* usage;
};
constexpr CgroupFiles kV2{"memory.max", "memory.current"};
constexpr CgroupFiles kV1{"memory.limit_in_bytes", "memory.usage_in_bytes"};
// cgroup v1 reports "no limit" as a huge number rounded to pages.
constexpr std::uint64_t kNoLimit = std::uint64_t{1} << 62;

/// The smallest room over `mount` + `path` and its ancestors up to `mount`.
void room_in_cgroup(const std::string& mount, std::string path, const CgroupFiles& files,
                    std::optional<HostMemoryRoom>& best) {
  for (;;) {
    const std::string dir = mount + (path == "/" ? "" : path);
    const std::optional<std::uint64_t> limit = read_number(dir + "/" + files.limit);
    const std::optional<std::uint64_t> usage = read_number(dir + "/" + files.usage);
    // A level that holds this running process cannot really have a limit
    // of 0 or account no usage at all: sandboxed cgroup views show "0" for
    // files nothing enforces, so such levels do not count.
    if (limit && usage && *limit > 0 && *usage > 0 && *limit < kNoLimit) {
      const std::string stat = dir + "/memory.stat";
      const std::uint64_t cache = read_field(stat, "active_file").value_or(0) +
                                  read_field(stat, "inactive_file").value_or(0);
      const std::uint64_t used = *usage > cache ? *usage - cache : 0;
      const std::uint64_t room = *limit > used ? *limit - used : 0;
      if (!best || room < best->bytes) {
        best = HostMemoryRoom{static_cast<std::size_t>(room),
                              "memory cgroup " + dir + ": " + files.limit + " " +
                                  std::to_string(*limit) + ", " + std::to_string(used) +
                                  " bytes in use besides page cache"};
      }
    }
    if (path == "/" || path.empty()) return;
    const std::size_t slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
}

}  // namespace

std::optional<HostMemoryRoom> read_host_memory_room(const std::string& root) {
  std::optional<HostMemoryRoom> best;
  const std::string base = root == "/" ? "" : root;
  // /proc/self/cgroup: "0::/path" (v2) or "N:memory[,...]:/path" (v1).
  if (const std::optional<std::string> cgroups = read_text(base + "/proc/self/cgroup")) {
    std::istringstream lines(*cgroups);
    std::string line;
    while (std::getline(lines, line)) {
      const std::size_t first = line.find(':');
      const std::size_t second = line.find(':', first + 1);
      if (first == std::string::npos || second == std::string::npos) continue;
      const std::string controllers = line.substr(first + 1, second - first - 1);
      const std::string path = line.substr(second + 1);
      if (controllers.empty()) {
        room_in_cgroup(base + "/sys/fs/cgroup", path, kV2, best);
      } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
        room_in_cgroup(base + "/sys/fs/cgroup/memory", path, kV1, best);
      }
    }
  }
  const std::string meminfo = base + "/proc/meminfo";
  if (const std::optional<std::uint64_t> kib = read_field(meminfo, "MemAvailable:")) {
    const std::uint64_t available = *kib * 1024;
    if (!best || available < best->bytes) {
      best = HostMemoryRoom{static_cast<std::size_t>(available), "MemAvailable in " + meminfo};
    }
  }
  return best;
}

}  // namespace tms
