// How the transfers of one disk backup file go: directly (O_DIRECT) or
// through the page cache, and the one switch from the first to the second.
//
// Some filesystems (certain FUSE and network filesystems, older tmpfs
// variants) accept O_DIRECT at open() and then refuse the transfers
// themselves with EINVAL. The first direct pwrite or pread refused that way
// clears O_DIRECT on the descriptor (FileIo::clear_direct; the flag belongs
// to the open file, so every transfer of the file is buffered from then
// on), and is run again, buffered. Blocks written directly before stay
// valid: both modes read and write the same file.
//
// Several I/O threads move blocks of one file at once (backup/io_threads.h).
// Each transfer runs under a shared lock and the switch under the exclusive
// one, so a transfer knows which mode it ran in (the caller writes back and
// drops what went through the cache) and the switch happens once: a thread
// refused after another switched just runs again. If clearing the flag
// fails, every refused transfer of the file fails with its own EINVAL, and
// the switch is not tried again for this file until the next pause or
// resume makes a new TransferMode.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "io/file_io.h"

namespace tms {

class TransferMode {
 public:
  /// The transfers of descriptor `fd`, which was opened with O_DIRECT when
  /// `direct`.
  TransferMode(FileIo& io, int fd, bool direct) : io_(io), fd_(fd), direct_(direct) {}
  TransferMode(const TransferMode&) = delete;
  TransferMode& operator=(const TransferMode&) = delete;

  [[nodiscard]] int fd() const { return fd_; }

  /// Whether transfers are direct now. Only for when no transfer runs (the
  /// mode to record once the I/O threads are done).
  [[nodiscard]] bool direct() const;

  /// Runs `call` (one pwrite or pread of the file: ssize_t, errno set on
  /// failure) in the current mode; a direct one refused with EINVAL
  /// switches the file to buffered I/O and runs again. `buffered` is set
  /// to whether the call whose result is returned went through the cache.
  template <typename Call>
  ssize_t run(Call call, bool& buffered) {
    ssize_t result = 0;
    int error = 0;
    {
      std::shared_lock lock(mutex_);
      buffered = !direct_;
      result = call();
      error = errno;
    }
    if (result < 0 && error == EINVAL && !buffered) {
      if (!switch_to_buffered()) {
        errno = EINVAL;  // the transfer's own error
        return -1;
      }
      std::shared_lock lock(mutex_);
      buffered = true;
      result = call();
      error = errno;
    }
    errno = error;  // as the call left it, whatever unlocking did
    return result;
  }

  /// For the message of a transfer that failed with `error`: when that is
  /// EINVAL and clearing O_DIRECT failed, says so; else "".
  [[nodiscard]] std::string switch_failure(int error) const;

 private:
  /// Clears O_DIRECT unless that was done (true) or failed (false) before.
  /// Takes the exclusive lock.
  bool switch_to_buffered();

  FileIo& io_;
  const int fd_;
  mutable std::shared_mutex mutex_;
  bool direct_;           // guarded by mutex_
  int switch_error_ = 0;  // errno of a failed clear_direct; guarded by mutex_
};

}  // namespace tms
