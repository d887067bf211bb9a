// Disk backups (BackupKind::kDisk): one unnamed file per paused allocation in
// the disk backup directory (backup/disk_backup.h does the I/O). The
// directory is this method's setting, else its default directory (the
// process-wide engine's is TMPDIR or /tmp), taken at the first disk-backed
// allocation; allocations are refused when neither is usable, since their
// first pause could not succeed.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backup/backup_method.h"
#include "backup/disk_backup.h"
#include "vmm/parking_lot.h"

namespace tms {

class DiskBackup final : public Backup {
 public:
  DiskBackup(DiskFile file, std::size_t bytes) : file_(std::move(file)), bytes_(bytes) {}

  [[nodiscard]] std::size_t file_bytes() const override { return file_.empty() ? 0 : bytes_; }
  void release_into(Released& released) noexcept override {
    if (!file_.empty()) released.files.push_back(std::move(file_));
  }
  [[nodiscard]] const DiskFile& file() const { return file_; }

 private:
  DiskFile file_;
  std::size_t bytes_;
};

class DiskMethod final : public BackupMethod {
 public:
  DiskMethod(DiskBackupIo& io, ParkingLot& parking) : io_(io), parking_(parking) {}

  /// Makes `dir` the directory of files written from now on (created with
  /// mode 0700 if missing, checked, made absolute). @throws InvalidArgument,
  /// IoError; the setting is unchanged then.
  void set_directory(const std::string& dir);
  /// Where files go when no directory is set: checked (and adopted as the
  /// setting) at the first allocation that needs it, not now. "" for none.
  void set_default_directory(std::string dir);
  /// The directory set, else the default directory; "" when neither.
  [[nodiscard]] std::string directory() const;

  /// @throws ConfigError without a directory, IoError when it is unusable.
  void prepare_allocation(int device) override;
  /// One file per target. A failure removes the files written so far.
  std::vector<std::unique_ptr<Backup>> save(const std::vector<BackupTarget>& targets) override;
  /// Reads each file back and checks it. @throws IoError naming the
  /// allocation whose file cannot be restored and the way out
  /// (discard_backup), OutOfMemory (no host memory to stage through).
  void restore(const std::vector<BackupTarget>& targets) override;

 private:
  /// The directory set, else the default one, prepared and adopted.
  /// @throws ConfigError when neither is set or the default is unusable.
  [[nodiscard]] std::string required_directory() const;

  DiskBackupIo& io_;
  ParkingLot& parking_;
  mutable std::mutex mutex_;       // guards directory_ and default_directory_
  mutable std::string directory_;  // adopts the default at first use
  std::string default_directory_;
};

}  // namespace tms
