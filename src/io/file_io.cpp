#include "io/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace tms {

int PosixFileIo::open(int dir_fd, const char* path, int flags, mode_t mode) {
  return ::openat(dir_fd, path, flags, mode);
}

int PosixFileIo::fstat(int fd, struct stat* info) { return ::fstat(fd, info); }

ssize_t PosixFileIo::pwrite(int fd, const void* buffer, std::size_t count, off_t offset) {
  return ::pwrite(fd, buffer, count, offset);
}

ssize_t PosixFileIo::pread(int fd, void* buffer, std::size_t count, off_t offset) {
  return ::pread(fd, buffer, count, offset);
}

int PosixFileIo::fallocate(int fd, off_t offset, off_t length) {
  return ::fallocate(fd, 0, offset, length);
}

int PosixFileIo::sync_range(int fd, off_t offset, off_t length) {
  return ::sync_file_range(
      fd, offset, length,
      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

int PosixFileIo::drop_cached(int fd, off_t offset, off_t length) {
  // posix_fadvise returns the error instead of setting errno.
  const int error = ::posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
  if (error == 0) return 0;
  errno = error;
  return -1;
}

int PosixFileIo::clear_direct(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  if ((flags & O_DIRECT) == 0) return 0;
  return ::fcntl(fd, F_SETFL, flags & ~O_DIRECT);
}

int PosixFileIo::close(int fd) { return ::close(fd); }

int PosixFileIo::unlink(int dir_fd, const char* path) { return ::unlinkat(dir_fd, path, 0); }

int PosixFileIo::access(int dir_fd, const char* path, int mode) {
  return ::faccessat(dir_fd, path, mode, 0);
}

int PosixFileIo::mkdir(const char* path, mode_t mode) { return ::mkdir(path, mode); }

FileIo& posix_file_io() {
  // Never destroyed: exit handlers that remove backup files may run after
  // static destructors.
  static PosixFileIo* const io = new PosixFileIo;
  return *io;
}

}  // namespace tms
