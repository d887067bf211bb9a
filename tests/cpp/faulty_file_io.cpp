#include "faulty_file_io.h"

#include <fcntl.h>

#include <cerrno>
#include <iterator>

namespace tms {
namespace {

constexpr std::string_view kFileCallNames[] = {
    "open",   "fstat", "pwrite",    "pread",           "close",         "unlink",
    "access", "mkdir", "fallocate", "sync_file_range", "posix_fadvise", "fcntl"};
static_assert(std::size(kFileCallNames) == static_cast<std::size_t>(FileCall::kCount));

}  // namespace

std::string_view file_call_name(FileCall call) {
  return kFileCallNames[static_cast<std::size_t>(call)];
}

void FaultyFileIo::fail_call(FileCall call, int nth, int error) {
  std::lock_guard lock(mutex_);
  failures_.add(call, nth, error);
}

void FaultyFileIo::clear_failures() {
  std::lock_guard lock(mutex_);
  failures_.clear();
}

std::size_t FaultyFileIo::call_count(FileCall call) const {
  std::lock_guard lock(mutex_);
  return failures_.count(call);
}

void FaultyFileIo::set_max_transfer(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  max_transfer_ = bytes;
}

void FaultyFileIo::set_refuse_direct_io(bool refuse) {
  std::lock_guard lock(mutex_);
  refuse_direct_io_ = refuse;
}

void FaultyFileIo::set_refuse_unnamed_files(bool refuse) {
  std::lock_guard lock(mutex_);
  refuse_unnamed_files_ = refuse;
}

void FaultyFileIo::set_refuse_direct_transfers(bool refuse) {
  std::lock_guard lock(mutex_);
  refuse_direct_transfers_ = refuse;
}

bool FaultyFileIo::refuses_transfer(int fd) const {
  {
    std::lock_guard lock(mutex_);
    if (!refuse_direct_transfers_) return false;
    if (pretend_direct_fds_.count(fd) != 0) return true;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_DIRECT) != 0;
}

std::size_t FaultyFileIo::capped(std::size_t count) const {
  std::lock_guard lock(mutex_);
  return max_transfer_ != 0 && count > max_transfer_ ? max_transfer_ : count;
}

int FaultyFileIo::enter(FileCall call) {
  std::lock_guard lock(mutex_);
  return failures_.next(call).value_or(0);
}

int FaultyFileIo::open(int dir_fd, const char* path, int flags, mode_t mode) {
  if (const int error = enter(FileCall::kOpen); error != 0) {
    errno = error;
    return -1;
  }
  bool refuse_direct = false;
  bool refuse_unnamed = false;
  bool refuse_transfers = false;
  {
    std::lock_guard lock(mutex_);
    refuse_direct = refuse_direct_io_;
    refuse_unnamed = refuse_unnamed_files_;
    refuse_transfers = refuse_direct_transfers_;
  }
  if (refuse_unnamed && (flags & O_TMPFILE) == O_TMPFILE) {
    errno = EOPNOTSUPP;
    return -1;
  }
  if (refuse_direct && (flags & O_DIRECT) != 0) {
    // As Linux does: a file asked for with O_CREAT is created before
    // O_DIRECT is refused, and stays.
    if ((flags & O_CREAT) != 0 && (flags & O_TMPFILE) != O_TMPFILE) {
      const int fd = PosixFileIo::open(dir_fd, path, flags & ~O_DIRECT, mode);
      if (fd >= 0) PosixFileIo::close(fd);
    }
    errno = EINVAL;
    return -1;
  }
  const int fd = PosixFileIo::open(dir_fd, path, flags, mode);
  if (fd < 0 && errno == EINVAL && refuse_transfers && (flags & O_DIRECT) != 0) {
    // This filesystem has no O_DIRECT at all: pretend it took the flag.
    const int buffered_fd = PosixFileIo::open(dir_fd, path, flags & ~O_DIRECT, mode);
    if (buffered_fd >= 0) {
      std::lock_guard lock(mutex_);
      pretend_direct_fds_.insert(buffered_fd);
    }
    return buffered_fd;
  }
  return fd;
}

int FaultyFileIo::fstat(int fd, struct stat* info) {
  if (const int error = enter(FileCall::kFstat); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::fstat(fd, info);
}

ssize_t FaultyFileIo::pwrite(int fd, const void* buffer, std::size_t count, off_t offset) {
  if (const int error = enter(FileCall::kPwrite); error != 0) {
    errno = error;
    return -1;
  }
  if (refuses_transfer(fd)) {
    errno = EINVAL;
    return -1;
  }
  return PosixFileIo::pwrite(fd, buffer, capped(count), offset);
}

ssize_t FaultyFileIo::pread(int fd, void* buffer, std::size_t count, off_t offset) {
  if (const int error = enter(FileCall::kPread); error != 0) {
    errno = error;
    return -1;
  }
  if (refuses_transfer(fd)) {
    errno = EINVAL;
    return -1;
  }
  return PosixFileIo::pread(fd, buffer, capped(count), offset);
}

int FaultyFileIo::fallocate(int fd, off_t offset, off_t length) {
  if (const int error = enter(FileCall::kFallocate); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::fallocate(fd, offset, length);
}

int FaultyFileIo::sync_range(int fd, off_t offset, off_t length) {
  if (const int error = enter(FileCall::kSyncRange); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::sync_range(fd, offset, length);
}

int FaultyFileIo::drop_cached(int fd, off_t offset, off_t length) {
  if (const int error = enter(FileCall::kDropCached); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::drop_cached(fd, offset, length);
}

int FaultyFileIo::clear_direct(int fd) {
  if (const int error = enter(FileCall::kClearDirect); error != 0) {
    errno = error;
    return -1;
  }
  const int result = PosixFileIo::clear_direct(fd);
  if (result == 0) {
    std::lock_guard lock(mutex_);
    pretend_direct_fds_.erase(fd);
  }
  return result;
}

int FaultyFileIo::close(int fd) {
  const int error = enter(FileCall::kClose);
  {
    std::lock_guard lock(mutex_);
    pretend_direct_fds_.erase(fd);
  }
  const int result = PosixFileIo::close(fd);
  if (error != 0) {
    errno = error;
    return -1;
  }
  return result;
}

int FaultyFileIo::unlink(int dir_fd, const char* path) {
  if (const int error = enter(FileCall::kUnlink); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::unlink(dir_fd, path);
}

int FaultyFileIo::access(int dir_fd, const char* path, int mode) {
  if (const int error = enter(FileCall::kAccess); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::access(dir_fd, path, mode);
}

int FaultyFileIo::mkdir(const char* path, mode_t mode) {
  if (const int error = enter(FileCall::kMkdir); error != 0) {
    errno = error;
    return -1;
  }
  return PosixFileIo::mkdir(path, mode);
}

}  // namespace tms
