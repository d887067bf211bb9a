// Disk backup: the contents of a paused allocation in a file of the backup
// directory, one file per allocation.
//
// Data path. Pause copies the allocation device -> host in chunks into a
// bounded staging buffer (two halves of `chunk_bytes`, page-locked) and
// writes each chunk with one large pwrite while the next chunk's copy is in
// flight; resume reads each chunk back and copies it host -> device while
// the next chunk is read. Host memory use is 2 x chunk_bytes however large
// the allocation (TMS_DISK_BACKUP_CHUNK_MB, 64 MiB by default).
//
// Direct I/O. Files are opened with O_DIRECT when the filesystem allows it
// (writes bypass the page cache, so a backup does not turn into host memory
// use); where open() refuses it (tmpfs, some network filesystems) buffered
// I/O is used instead. Every transfer is a multiple of 4 KiB at a 4 KiB
// aligned offset from a page-aligned buffer, as O_DIRECT requires, so a
// file holds the allocation's bytes rounded up to 4 KiB.
//
// No fsync. Backups are scratch data that must not outlive the process
// (they are removed after resume, on free, on engine teardown and at exit),
// so nothing is gained by forcing them to stable storage: a crash loses the
// GPU memory they belong to anyway. The page cache (buffered fallback) or
// the device's write cache may still hold data when pause returns; reading
// it back through the same kernel is always consistent.
//
// Naming: <dir>/tms-backup-<pid>-<device address in hex>.bin, created with
// O_EXCL (a "-<n>" suffix is added if a stale file of that name exists) and
// mode 0600.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backup/copy_pipeline.h"
#include "backup/file_io.h"
#include "backup/host_memory.h"
#include "driver/driver.h"

namespace tms {

/// Move-only owner of one backup file: unlinks it when destroyed.
class DiskFile {
 public:
  DiskFile() = default;
  DiskFile(FileIo& io, std::string path) : io_(&io), path_(std::move(path)) {}
  DiskFile(DiskFile&& other) noexcept { *this = std::move(other); }
  DiskFile& operator=(DiskFile&& other) noexcept;
  /// Removes the file; a failure is logged (use remove() to see it).
  ~DiskFile();

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] bool empty() const { return path_.empty(); }

  /// Unlinks the file now (a file that is already gone counts as removed).
  /// @throws IoError; the file then stays owned so a later call can retry.
  void remove();

 private:
  FileIo* io_ = nullptr;
  std::string path_;
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

  /// @throws IoError when `dir` is not a writable directory.
  void check_directory(const std::string& dir) const;

  /// Writes [src, src+size) of `device` to a new file in `dir`.
  /// @throws IoError (with the path and errno text; ENOSPC says so),
  /// DriverError, OutOfMemory (staging memory). No file remains then.
  DiskFile save(const std::string& dir, int device, DevicePtr src, std::size_t size);
  /// Reads `file` back into [dst, dst+size) of `device`.
  /// @throws IoError, DriverError; the file is untouched then.
  void load(const DiskFile& file, int device, DevicePtr dst, std::size_t size);

  /// Gives the staging buffer back (it is made again on next use).
  void release_staging() { staging_.reset(); }
  [[nodiscard]] std::size_t staging_bytes() const { return staging_.size(); }

 private:
  /// The two staging halves, made on first use.
  std::uint8_t* staging();
  /// Queues the copy of `size` bytes between `staging_offset` of the
  /// staging buffer and `device_ptr` on `lane`, one piece per registered
  /// chunk.
  void start_copy(bool to_host, int device, std::size_t lane, std::size_t staging_offset,
                  DevicePtr device_ptr, std::size_t size);
  /// Opens with O_DIRECT when allowed, else without; -1 and `error` set
  /// (an errno value) on failure.
  int open_file(const std::string& path, int flags, int& error);
  void write_all(int fd, const std::uint8_t* data, std::size_t size, std::size_t offset,
                 const std::string& path);
  void read_all(int fd, std::uint8_t* data, std::size_t size, std::size_t offset,
                const std::string& path);

  HostMemory& host_;
  FileIo& io_;
  CopyPipeline& copies_;
  std::size_t chunk_bytes_;
  bool direct_io_;
  HostBuffer staging_;
};

}  // namespace tms
