// Helpers shared by the engine tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/allocation.h"
#include "driver/sim_driver.h"

namespace tms::testing {

constexpr std::size_t kMiB = std::size_t{1} << 20;

/// Fills [ptr, ptr+size) with a pattern that depends on `seed` and position.
inline void fill_pattern(std::uintptr_t ptr, std::size_t size, std::uint8_t seed) {
  auto* bytes = reinterpret_cast<std::uint8_t*>(ptr);
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = static_cast<std::uint8_t>(seed + i * 31 + (i >> 12));
}

inline bool has_pattern(std::uintptr_t ptr, std::size_t size, std::uint8_t seed) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(ptr);
  for (std::size_t i = 0; i < size; ++i) {
    if (bytes[i] != static_cast<std::uint8_t>(seed + i * 31 + (i >> 12))) return false;
  }
  return true;
}

inline bool all_zero(std::uintptr_t ptr, std::size_t size) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(ptr);
  for (std::size_t i = 0; i < size; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

/// Runs `touch` in a forked child; true if the child died of SIGSEGV/SIGBUS.
inline bool faults_when_touched(const std::function<void()>& touch) {
  const pid_t pid = fork();
  if (pid == 0) {
    // Die of the signal itself even where a sanitizer installed a handler.
    std::signal(SIGSEGV, SIG_DFL);
    std::signal(SIGBUS, SIG_DFL);
    touch();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS);
}

/// Everything the simulated driver holds, for before/after comparisons.
struct SimSnapshot {
  std::vector<std::size_t> physical;  ///< per device
  std::size_t reserved, mapped, host, streams, registered;
  bool operator==(const SimSnapshot&) const = default;
};

inline SimSnapshot snapshot(const SimDriver& sim) {
  return {sim.physical_bytes_per_device(),
          sim.reserved_bytes(),
          sim.mapped_bytes(),
          sim.host_bytes(),
          sim.live_streams(),
          sim.registered_host_ranges()};
}

/// Backup policies by name, for requests.
inline BackupPolicy host_backup(HostMemoryKind memory = HostMemoryKind::kPinned) {
  return {BackupKind::kHost, memory};
}
inline BackupPolicy compressed_backup(HostMemoryKind memory = HostMemoryKind::kPinned) {
  return {BackupKind::kHostCompressed, memory};
}
inline BackupPolicy disk_backup() { return {BackupKind::kDisk}; }
/// A plain host backup when `backup`, else none.
inline BackupPolicy backup_if(bool backup) { return backup ? host_backup() : BackupPolicy{}; }

/// A request for `size` bytes of `device` under `tag`, e.g.
/// request(kMiB, 0, "weights", host_backup()).
inline AllocationRequest request(std::size_t size, int device, std::string tag,
                                 BackupPolicy policy = {}) {
  return {size, device, std::move(tag), policy};
}

}  // namespace tms::testing
