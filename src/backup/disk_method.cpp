#include "backup/disk_method.h"

#include "common/errors.h"

namespace tms {

void DiskMethod::set_directory(const std::string& dir) {
  std::string absolute = io_.prepare_directory(dir);
  std::lock_guard lock(mutex_);
  directory_ = std::move(absolute);
}

void DiskMethod::set_default_directory(std::string dir) {
  std::lock_guard lock(mutex_);
  default_directory_ = std::move(dir);
}

std::string DiskMethod::directory() const {
  std::lock_guard lock(mutex_);
  return directory_.empty() ? default_directory_ : directory_;
}

std::string DiskMethod::required_directory() const {
  std::string fallback;
  {
    std::lock_guard lock(mutex_);
    if (!directory_.empty()) return directory_;
    fallback = default_directory_;
  }
  if (fallback.empty()) {
    throw ConfigError(
        "disk backup is enabled for this allocation but no disk backup directory is set; set "
        "TMS_DISK_BACKUP_DIR or call set_disk_backup_dir() before allocating");
  }
  std::string absolute;
  try {
    absolute = io_.prepare_directory(fallback);
  } catch (const Error& error) {
    throw ConfigError(
        "disk backup is enabled for this allocation and no disk backup directory is "
        "set, and the default one ('" +
        fallback + "', from TMPDIR or /tmp) is not usable: " + error.what() +
        "; set TMS_DISK_BACKUP_DIR or call set_disk_backup_dir() before allocating");
  }
  std::lock_guard lock(mutex_);
  if (directory_.empty()) directory_ = std::move(absolute);  // unless one was set meanwhile
  return directory_;
}

void DiskMethod::prepare_allocation(int /*device*/) { io_.check_directory(required_directory()); }

std::vector<std::unique_ptr<Backup>> DiskMethod::save(const std::vector<BackupTarget>& targets) {
  const std::string dir = required_directory();
  std::vector<std::unique_ptr<Backup>> saved;
  saved.reserve(targets.size());
  for (const BackupTarget& target : targets) {
    DiskFile file = io_.save(dir, target.device, target.base, target.bytes);
    // The data lives in the descriptor; a name left by a failed unlink is
    // removed now or later.
    if (file.named()) parking_.remove_or_park(file.take_name());
    saved.push_back(std::make_unique<DiskBackup>(std::move(file), target.bytes));
  }
  return saved;
}

void DiskMethod::restore(const std::vector<BackupTarget>& targets) {
  for (const BackupTarget& target : targets) {
    // A record of this kind only ever holds a backup this method made.
    const auto& backup = *static_cast<const DiskBackup*>(target.current);
    try {
      io_.load(backup.file(), target.device, target.base, target.bytes);
    } catch (const IoError& error) {
      // Name the one allocation at fault and the way out, so that one lost
      // file does not block every later resume.
      throw IoError("the disk backup of " + describe_target(target) +
                    " cannot be restored: " + error.what() +
                    ". Everything stays paused. To resume without this allocation's contents, "
                    "call discard_backup(" +
                    hex_address(target.base) + ") (C: tms_discard_backup), or free it");
    } catch (const OutOfMemory& error) {
      // No host memory for the staging buffer: the restore had not begun.
      throw OutOfMemory("resume",
                        "could not restore the disk backup of " + describe_target(target) +
                            "; everything stays paused with its backup (" + error.what() + ")",
                        error.bytes_needed(), error.bytes_free());
    }
  }
}

}  // namespace tms
