// One pauseable allocation: what was asked for, where it lives, and what
// state it is in.
#pragma once

#include <cstddef>
#include <string>

#include "backup/host_buffer.h"
#include "driver/driver.h"

namespace tms {

/// What happens to an allocation's contents while it is paused.
struct BackupPolicy {
  bool cpu_backup = false;  ///< keep a copy in host memory
  HostMemoryKind host_kind = HostMemoryKind::kPinned;

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
  /// Set while a pause, resume or free works on this record outside the
  /// registry lock; others wait for it to clear (Engine::idle_).
  bool busy = false;

  [[nodiscard]] bool contains(DevicePtr ptr) const { return ptr >= base && ptr < base + size; }
};

}  // namespace tms
