// One pauseable allocation: what was asked for, where it lives, and what
// state it is in.
#pragma once

#include <cstddef>
#include <string>

#include "backup/disk_backup.h"
#include "backup/host_memory.h"
#include "driver/driver.h"

namespace tms {

/// What happens to an allocation's contents while it is paused. Without a
/// backup they are discarded (resume gives zero-filled memory). When both
/// are set, disk backup wins: the contents go to a file, not host memory.
struct BackupPolicy {
  bool cpu_backup = false;  ///< keep a copy in host memory
  HostMemoryKind host_kind = HostMemoryKind::kPinned;
  bool disk_backup = false;  ///< keep a copy in a file of the disk backup directory

  [[nodiscard]] bool uses_host_backup() const { return cpu_backup && !disk_backup; }

  bool operator==(const BackupPolicy&) const = default;
};

/// What the caller asks for; the engine adds addresses and handles.
struct AllocationRequest {
  std::size_t size = 0;
  int device = -1;  ///< -1: the driver's current device
  std::string tag = "default";
  BackupPolicy policy;
};

enum class AllocationState { kActive, kPaused };

struct Allocation {
  DevicePtr base = 0;
  std::size_t requested_size = 0;
  std::size_t size = 0;  ///< requested_size rounded up to the granularity
  int device = 0;
  std::string tag;
  BackupPolicy policy;

  AllocationState state = AllocationState::kActive;
  PhysicalHandle handle = 0;  ///< valid while active
  /// Host copy of the contents. Holds the data while paused; with retention
  /// on it is kept (stale) while active, to be reused by the next pause.
  HostBuffer backup;
  /// File holding the contents while paused (disk backup policy only);
  /// removed on resume, free and engine teardown.
  DiskFile disk_file;
  /// Its backup was dropped while paused (Engine::discard_backup): the
  /// next resume maps it without contents and says so.
  bool backup_discarded = false;
  /// Set while a pause, resume or free works on this record outside the
  /// registry lock; others wait for it to clear (Engine::idle_).
  bool busy = false;

  [[nodiscard]] bool contains(DevicePtr ptr) const { return ptr >= base && ptr < base + size; }
};

}  // namespace tms
