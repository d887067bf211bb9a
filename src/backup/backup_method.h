// One backup kind's part in the engine's pause and resume transactions.
//
// The engine owns the transaction (claim, synchronize, save, unmap, commit,
// and the mirror for resume); each kind owns what its backups hold and how
// they get there and back:
//
//   pause   BackupMethod::save      plans (host memory, files) and copies the
//                                   contents out while everything is still
//                                   mapped; all or nothing
//           commit                  the engine moves each new Backup into its
//                                   record once every unmap succeeded; until
//                                   then dropping them gives back what they hold
//   resume  Backup::host_copy       plain host bytes are copied back by the
//                                   resume pipeline batch by batch as memory
//                                   gets mapped
//           BackupMethod::restore   everything else, once all is mapped
//           commit                  Backup::release_into: what resume does not
//                                   retain goes back (host memory in one batch,
//                                   files to the closing thread)
//   free, discard, teardown         Backup::release_into as well
//
// A failed save or restore leaves the records as they were: the transaction
// rolls back by destroying what it has not committed.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backup/backup_policy.h"
#include "backup/disk_backup.h"
#include "backup/host_memory.h"
#include "driver/driver.h"

namespace tms {

/// What a backup gives back when its record lets go of it.
struct Released {
  std::vector<HostBuffer> host;
  std::vector<DiskFile> files;

  /// Room for what `backups` backups give back (each at most one buffer and
  /// one file), taken before release_into: that is noexcept, and runs in
  /// commits that must not stop half way, so it must not allocate.
  /// @throws std::bad_alloc.
  void reserve(std::size_t backups) {
    host.reserve(host.size() + backups);
    files.reserve(files.size() + backups);
  }
};

/// One allocation's saved contents, owned by its record.
class Backup {
 public:
  Backup() = default;
  Backup(const Backup&) = delete;
  Backup& operator=(const Backup&) = delete;
  virtual ~Backup() = default;

  /// Host memory held (stats' backup_bytes).
  [[nodiscard]] virtual std::size_t host_bytes() const { return 0; }
  /// Contents held in a file (stats' disk_backup_bytes).
  [[nodiscard]] virtual std::size_t file_bytes() const { return 0; }
  /// The contents as plain bytes in host memory, or nullptr. Resume copies
  /// these back itself as soon as each allocation is mapped, and readers
  /// lease them (Engine::lease_backup): the memory lives until the last
  /// lease ends even when the record lets go of it.
  [[nodiscard]] virtual std::shared_ptr<const HostBuffer> host_copy() const { return nullptr; }
  /// Whether it may stay with its record after resume (retain_cpu_backup),
  /// to be refreshed in place by the next pause.
  [[nodiscard]] virtual bool retainable() const { return false; }
  /// Hands what it holds to `released`, which has room for it
  /// (Released::reserve); the backup is empty afterwards.
  virtual void release_into(Released& released) noexcept = 0;
};

/// One allocation in a transaction, as a backup kind sees it.
struct BackupTarget {
  int device = 0;
  DevicePtr base = 0;
  std::size_t bytes = 0;  ///< the contents: the requested size
  std::string tag;        ///< host blocks are never shared across tags
  HostMemoryKind host_memory = HostMemoryKind::kPinned;
  /// The backup its record holds now: a retained one on pause (refreshed in
  /// place where the kind allows), the one to restore on resume.
  Backup* current = nullptr;
};

/// "allocation 0x7f0000000000 of 4194304 bytes (tag 'kv', device 0)".
std::string describe_target(const BackupTarget& target);

class BackupMethod {
 public:
  BackupMethod() = default;
  BackupMethod(const BackupMethod&) = delete;
  BackupMethod& operator=(const BackupMethod&) = delete;
  virtual ~BackupMethod() = default;

  /// Refuses an allocation on `device` that this kind could not back up
  /// later (a missing directory, say), or gets ready for it (loads what its
  /// first save would otherwise wait for), before any memory is taken.
  /// @throws ConfigError, IoError, DriverError.
  virtual void prepare_allocation(int device) { (void)device; }
  /// Saves every target's contents (their memory is mapped and idle).
  /// Returns one backup per target, in order; nullptr where the target's
  /// current backup was refreshed in place. All or nothing: @throws
  /// OutOfMemory, DriverError, IoError, and nothing it made remains then.
  virtual std::vector<std::unique_ptr<Backup>> save(const std::vector<BackupTarget>& targets) = 0;
  /// Restores what Backup::host_copy does not cover into the targets'
  /// memory, which is mapped again. The backups stay untouched either way.
  /// @throws DeviceOutOfMemory (a device scratch), DriverError, IoError.
  virtual void restore(const std::vector<BackupTarget>& targets) { (void)targets; }
};

}  // namespace tms
