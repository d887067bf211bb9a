// The backup kinds the engine knows, one BackupMethod each, looked up by
// BackupKind. Adding a kind: a line in TMS_BACKUP_KINDS (backup_policy.h),
// a file with its Backup and BackupMethod, and a member here.
#pragma once

#include <array>

#include "backup/backup_method.h"
#include "backup/backup_policy.h"
#include "backup/compressed_method.h"
#include "backup/disk_method.h"
#include "backup/host_method.h"

namespace tms {

class BackupMethods {
 public:
  BackupMethods(Driver& driver, ParkingLot& parking, HostMemory& host, CopyPipeline& copies,
                DiskBackupIo& disk);
  BackupMethods(const BackupMethods&) = delete;
  BackupMethods& operator=(const BackupMethods&) = delete;

  /// The method of `kind`; nullptr for BackupKind::kNone (nothing is kept).
  [[nodiscard]] BackupMethod* method(BackupKind kind) const {
    return by_kind_.at(static_cast<std::size_t>(kind));
  }
  [[nodiscard]] DiskMethod& disk() { return disk_; }
  [[nodiscard]] const DiskMethod& disk() const { return disk_; }

 private:
  HostMethod host_;
  CompressedMethod compressed_;
  DiskMethod disk_;
  std::array<BackupMethod*, static_cast<std::size_t>(BackupKind::kCount)> by_kind_{};
};

}  // namespace tms
