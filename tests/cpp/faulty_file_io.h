// FaultyFileIo: PosixFileIo with fault injection and call counts, so that
// disk backup tests can make the N-th file call of a kind fail. A test
// double: built into the tests only, never into the shipped library.
#pragma once

#include <cstddef>
#include <mutex>
#include <set>
#include <string_view>

#include "common/failure_schedule.h"
#include "io/file_io.h"

namespace tms {

/// Each FileIo method that FaultyFileIo can make fail.
enum class FileCall {
  kOpen,
  kFstat,
  kPwrite,
  kPread,
  kClose,
  kUnlink,
  kAccess,
  kMkdir,
  kFallocate,
  kSyncRange,
  kDropCached,
  kClearDirect,
  kCount
};

/// "open" for FileCall::kOpen, and so on: the system call's name
/// ("sync_file_range", "posix_fadvise", "fcntl" for the last three).
std::string_view file_call_name(FileCall call);

/// PosixFileIo with fault injection and call counts, for tests. Thread-safe.
class FaultyFileIo final : public PosixFileIo {
 public:
  /// The `nth` (1-based) next call of `call` fails with `error` (errno).
  /// A failing close() still closes the descriptor, as Linux does.
  void fail_call(FileCall call, int nth, int error);
  void clear_failures();
  [[nodiscard]] std::size_t call_count(FileCall call) const;
  /// pwrite/pread move at most this many bytes per call (0: no limit), to
  /// exercise the short-transfer loops.
  void set_max_transfer(std::size_t bytes);
  /// open() with O_DIRECT fails with EINVAL, as on filesystems without it.
  void set_refuse_direct_io(bool refuse);
  /// open() takes O_DIRECT, but pwrite/pread of a descriptor opened with it
  /// fail with EINVAL until clear_direct() clears the flag, as on some FUSE
  /// and network filesystems. (Where the real filesystem refuses O_DIRECT,
  /// the file is opened without it and the flag is only pretended.)
  void set_refuse_direct_transfers(bool refuse);
  /// open() with O_TMPFILE fails with EOPNOTSUPP, as on filesystems without
  /// unnamed files (disk backup then uses named files it unlinks at once).
  void set_refuse_unnamed_files(bool refuse);

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

 private:
  /// Counts the call; returns the errno to fail with, or 0.
  int enter(FileCall call);
  // `count`, cut to the transfer limit set by set_max_transfer (short I/O).
  [[nodiscard]] std::size_t capped(std::size_t count) const;
  /// Whether a transfer of `fd` is refused: transfers are refused and the
  /// descriptor has O_DIRECT (set_refuse_direct_transfers).
  [[nodiscard]] bool refuses_transfer(int fd) const;

  mutable std::mutex mutex_;
  FailureSchedule<FileCall, int> failures_;  // the errno to fail with
  std::size_t max_transfer_ = 0;
  bool refuse_direct_io_ = false;
  bool refuse_unnamed_files_ = false;
  bool refuse_direct_transfers_ = false;
  std::set<int> pretend_direct_fds_;  // "O_DIRECT" where the filesystem has none
};

}  // namespace tms
