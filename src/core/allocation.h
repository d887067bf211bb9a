// One pauseable allocation: what was asked for, where it lives, and what
// state it is in.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "backup/backup_method.h"
#include "backup/backup_policy.h"
#include "driver/driver.h"

namespace tms {

/// What the caller asks for; the engine adds addresses and handles.
struct AllocationRequest {
  std::size_t size = 0;
  int device = -1;  ///< -1: the driver's current device
  std::string tag = "default";
  BackupPolicy policy;
};

enum class AllocationState {
  kActive,
  kPaused,
  /// A failed pause could not map it back (a second driver failure while
  /// undoing the first). Its physical memory, and so its contents, is kept,
  /// but its range is not usable. Later operations try to map it again
  /// (Engine::repair_broken); until one succeeds, pausing or resuming it is
  /// an InvalidState error, and free() gives back what it holds.
  kBroken,
};

struct Allocation {
  DevicePtr base = 0;
  std::size_t requested_size = 0;
  std::size_t size = 0;  ///< requested_size rounded up to the granularity
  int device = 0;
  std::string tag;
  BackupPolicy policy;

  AllocationState state = AllocationState::kActive;
  PhysicalHandle handle = 0;  ///< valid while active or broken
  /// kBroken only: the range is mapped (the map succeeded, granting access
  /// did not), so a repair only grants access and free() unmaps.
  bool range_mapped = false;
  /// The contents while paused, made by the method of policy.kind; with
  /// retention on, a retainable one stays (stale) while active, to be
  /// refreshed in place by the next pause.
  std::unique_ptr<Backup> backup;
  /// Its backup was dropped while paused (Engine::discard_backup): the
  /// next resume maps it without contents and says so.
  bool backup_discarded = false;
  /// Set while a pause, resume or free works on this record outside the
  /// registry lock, and while a non-blocking resume's restore copies into
  /// it; others wait for it to clear (Engine::idle_).
  bool busy = false;
  /// A non-blocking resume's restore into this record failed after the
  /// resume returned (the driver's message): it is mapped, its contents are
  /// not to be trusted, and it keeps its backup until a restore succeeds
  /// (Engine::wait retries) or it is freed.
  std::string restore_error;
  /// Whether restore_error was raised to the caller yet (it is raised once;
  /// the next wait retries).
  bool restore_error_raised = false;

  [[nodiscard]] bool contains(DevicePtr ptr) const { return ptr >= base && ptr < base + size; }
  /// This record as its backup method sees it.
  [[nodiscard]] BackupTarget backup_target() const {
    return {device, base, requested_size, tag, policy.host_memory, backup.get()};
  }
};

}  // namespace tms
