// The few file operations disk backup makes, behind an interface so tests can
// make the N-th call of a kind fail (tests/cpp/faulty_file_io.h, the disk
// counterpart of SimDriver's fault injection).
//
// Every method has POSIX semantics: it returns -1 (or a negative count) and
// sets errno on failure. The caller (backup/disk_backup.cpp) turns failures
// into IoError with the path and what was being done, retries EINTR and
// short transfers, and falls back from O_DIRECT when open() refuses it or a
// direct transfer is refused (backup/transfer_mode.h).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>

namespace tms {

class FileIo {
 public:
  FileIo() = default;
  FileIo(const FileIo&) = delete;
  FileIo& operator=(const FileIo&) = delete;
  virtual ~FileIo() = default;

  /// openat(2); `dir_fd` may be AT_FDCWD.
  virtual int open(int dir_fd, const char* path, int flags, mode_t mode) = 0;
  virtual int fstat(int fd, struct stat* info) = 0;
  virtual ssize_t pwrite(int fd, const void* buffer, std::size_t count, off_t offset) = 0;
  virtual ssize_t pread(int fd, void* buffer, std::size_t count, off_t offset) = 0;
  /// fallocate(2) with mode 0: reserves [offset, offset+length) and extends
  /// the file to cover it.
  virtual int fallocate(int fd, off_t offset, off_t length) = 0;
  /// sync_file_range(2) with WAIT_BEFORE | WRITE | WAIT_AFTER: writes the
  /// range's dirty pages back and waits (not an fsync: no metadata, no
  /// device cache flush).
  virtual int sync_range(int fd, off_t offset, off_t length) = 0;
  /// posix_fadvise(2) POSIX_FADV_DONTNEED: drops the range's clean cached
  /// pages. Unlike posix_fadvise itself, returns -1 and sets errno.
  virtual int drop_cached(int fd, off_t offset, off_t length) = 0;
  /// fcntl(2) F_GETFL, then F_SETFL without O_DIRECT: the descriptor's open
  /// file goes through the page cache from then on (Linux lets F_SETFL
  /// change O_DIRECT).
  virtual int clear_direct(int fd) = 0;
  /// As on Linux, the descriptor is gone afterwards even when this fails.
  virtual int close(int fd) = 0;
  /// unlinkat(2) of a file; `dir_fd` may be AT_FDCWD.
  virtual int unlink(int dir_fd, const char* path) = 0;
  /// faccessat(2): whether the calling process may use `path` with `mode`.
  virtual int access(int dir_fd, const char* path, int mode) = 0;
  virtual int mkdir(const char* path, mode_t mode) = 0;
};

/// The real thing: thin wrappers over the system calls.
class PosixFileIo : public FileIo {
 public:
  int open(int dir_fd, const char* path, int flags, mode_t mode) override;
  int fstat(int fd, struct stat* info) override;
  ssize_t pwrite(int fd, const void* buffer, std::size_t count, off_t offset) override;
  ssize_t pread(int fd, void* buffer, std::size_t count, off_t offset) override;
  int fallocate(int fd, off_t offset, off_t length) override;
  int sync_range(int fd, off_t offset, off_t length) override;
  int drop_cached(int fd, off_t offset, off_t length) override;
  int clear_direct(int fd) override;
  int close(int fd) override;
  int unlink(int dir_fd, const char* path) override;
  int access(int dir_fd, const char* path, int mode) override;
  int mkdir(const char* path, mode_t mode) override;
};

/// The process-wide PosixFileIo.
FileIo& posix_file_io();

}  // namespace tms
