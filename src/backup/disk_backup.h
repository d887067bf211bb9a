// Disk backup: the contents of a paused allocation in a file of the backup
// directory, one file per allocation.
//
// Data path. Pause copies the allocation device -> host in chunks into a
// staging buffer (two halves of up to `chunk_bytes`, page-locked) and
// writes each chunk with one large pwrite while the next chunk's copy is in
// flight; resume reads each chunk back and copies it host -> device while
// the next chunk is read. The staging buffer is sized to the work:
// min(allocation rounded up to 4 KiB, 2 x chunk_bytes), grown when a larger
// allocation needs it (TMS_DISK_BACKUP_CHUNK_MB, 64 MiB by default).
//
// Files no one else can open. A backup file is created unnamed (O_TMPFILE)
// in the directory, or, where the filesystem cannot do that, under a
// random name that is unlinked at once. Only the descriptor refers to it,
// kept from pause until resume or free: resume reads exactly the bytes that
// pause wrote (nobody can swap the file for a symlink, a FIFO or other
// data), and the kernel frees the space when the descriptor is closed, so
// no exit of the process (Ctrl-C, SIGTERM, abort, os._exit, SIGKILL) leaves
// a file behind. A checksum computed while writing (backup/checksum.h) is
// checked while reading, so damage is an error, never wrong contents.
//
// Direct I/O. Files are opened with O_DIRECT when the filesystem allows it
// (writes bypass the page cache, so a backup does not turn into host memory
// use); where open() refuses it (tmpfs, some network filesystems) buffered
// I/O is used instead. Every transfer is a multiple of 4 KiB at a 4 KiB
// aligned offset from a page-aligned buffer, as O_DIRECT requires, so a
// file holds the allocation's bytes rounded up to 4 KiB.
//
// No fsync. Backups are scratch data that never outlive the process, so
// nothing is gained by forcing them to stable storage; reading back through
// the same kernel is always consistent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backup/copy_pipeline.h"
#include "backup/file_io.h"
#include "backup/host_memory.h"
#include "driver/driver.h"

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

  /// Closes the descriptor and unlinks the name, if any (a name that is
  /// already gone counts as removed). @throws IoError when unlinking fails;
  /// the name then stays owned so a later call can retry.
  void remove();

 private:
  friend class DiskBackupIo;
  FileIo* io_ = nullptr;
  int fd_ = -1;
  std::string name_;  // full path while the file still has a name
  std::string directory_;
  std::size_t bytes_ = 0;  // bytes written (padded to 4 KiB)
  std::uint64_t checksum_ = 0;
};

struct DiskBackupOptions {
  std::size_t chunk_bytes = std::size_t{64} << 20;  ///< rounded up to 4 KiB
  bool direct_io = true;                            ///< try O_DIRECT first
};

class DiskBackupIo {
 public:
  DiskBackupIo(HostMemory& host, FileIo& io, CopyPipeline& copies, DiskBackupOptions options);
  DiskBackupIo(const DiskBackupIo&) = delete;
  DiskBackupIo& operator=(const DiskBackupIo&) = delete;

  [[nodiscard]] FileIo& io() const { return io_; }
  [[nodiscard]] std::size_t chunk_bytes() const { return chunk_bytes_; }

  /// Creates `dir` if missing (mode 0700) and checks that it is a safe,
  /// writable directory (backup/backup_directory.h).
  /// @returns its absolute path. @throws InvalidArgument, IoError.
  [[nodiscard]] std::string prepare_directory(const std::string& dir) const;
  /// Checks that `dir` is (still) a safe, writable directory.
  /// @throws IoError saying what is wrong.
  void check_directory(const std::string& dir) const;

  /// Writes [src, src+size) of `device` to a new file in `dir`.
  /// @throws IoError (with the directory and errno text; ENOSPC and the
  /// file size limit say so), DriverError, OutOfMemory (staging memory).
  /// No file remains then.
  DiskFile save(const std::string& dir, int device, DevicePtr src, std::size_t size);
  /// Reads `file` back into [dst, dst+size) of `device` and checks it
  /// against the checksum taken while writing.
  /// @throws IoError (also when the file was changed), DriverError; the
  /// file is untouched then.
  void load(const DiskFile& file, int device, DevicePtr dst, std::size_t size);

  /// Gives the staging buffer back (it is made again on next use).
  void release_staging() { staging_.reset(); }
  [[nodiscard]] std::size_t staging_bytes() const { return staging_.size(); }

 private:
  /// Staging for an allocation of `size` bytes: at least min(size rounded
  /// up to 4 KiB, 2 x chunk_bytes); grown (never shrunk) as needed.
  std::uint8_t* staging(std::size_t size);
  /// Queues the copy of `size` bytes between `staging_offset` of the
  /// staging buffer and `device_ptr` on `lane`, one piece per registered
  /// chunk.
  void start_copy(bool to_host, int device, std::size_t lane, std::size_t staging_offset,
                  DevicePtr device_ptr, std::size_t size);
  /// A new file no one else can open in the directory `dir_fd`.
  DiskFile create_file(int dir_fd, const std::string& dir);
  /// open() with O_DIRECT when allowed, else without; -1 and errno set.
  int open_direct_if_possible(int dir_fd, const char* path, int flags);
  void write_all(int fd, const std::uint8_t* data, std::size_t size, std::size_t offset,
                 const std::string& where);
  void read_all(int fd, std::uint8_t* data, std::size_t size, std::size_t offset,
                const std::string& where);

  HostMemory& host_;
  FileIo& io_;
  CopyPipeline& copies_;
  std::size_t chunk_bytes_;
  bool direct_io_;
  HostBuffer staging_;
};

}  // namespace tms
