// The owner of one disk backup file, below the backup layer: the parking
// lot (vmm/parking_lot.h) keeps files whose removal failed, and needs only
// to move them and remove them, not the transfers of backup/disk_backup.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/file_io.h"

namespace tms {

/// Move-only owner of one backup file: its descriptor, and its name while
/// it still has one (named files whose unlink failed). Destroying it
/// closes the descriptor and unlinks the name.
class DiskFile {
 public:
  DiskFile() = default;
  DiskFile(FileIo& io, int fd, std::string directory)
      : io_(&io), fd_(fd), directory_(std::move(directory)) {}
  DiskFile(DiskFile&& other) noexcept { *this = std::move(other); }
  DiskFile& operator=(DiskFile&& other) noexcept;
  /// Removes the file; a failure is logged (use remove() to see it).
  ~DiskFile();

  [[nodiscard]] bool empty() const { return fd_ < 0 && name_.empty(); }
  [[nodiscard]] int fd() const { return fd_; }
  /// The directory it lives in, for messages.
  [[nodiscard]] const std::string& directory() const { return directory_; }
  /// Whether it still has a name in the directory.
  [[nodiscard]] bool named() const { return !name_.empty(); }
  /// Splits the name off (a file that owns only the name, for the caller to
  /// unlink or park); this one keeps the descriptor and the data.
  DiskFile take_name();
  /// Hands the descriptor over to the caller, who closes it; the name, if
  /// any, stays owned here.
  [[nodiscard]] int release_descriptor() { return std::exchange(fd_, -1); }

  /// Closes the descriptor and unlinks the name, if any (a name that is
  /// already gone counts as removed). @throws IoError when unlinking fails;
  /// the name then stays owned so a later call can retry.
  void remove();

 private:
  // What is known of the contents (how they were written, their size and
  // checksums) is kept with the descriptor, so that a paused allocation
  // holds one object; only the disk backup (backup/disk_backup.h), which
  // writes and reads it, touches it.
  friend class DiskBackupIo;
  FileIo* io_ = nullptr;
  int fd_ = -1;
  std::string name_;  // full path while the file still has a name
  std::string directory_;
  // Transfers bypass the page cache (O_DIRECT): as opened, until the
  // filesystem refuses a direct one (backup/transfer_mode.h). Mutable: a
  // load, which leaves the file as it was, may switch its descriptor.
  mutable bool direct_ = false;
  std::size_t bytes_ = 0;                 // bytes written (padded to 4 KiB)
  std::vector<std::uint64_t> checksums_;  // one per block of chunk_bytes
};

}  // namespace tms
