#include "backup/disk_backup.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <system_error>
#include <utility>

#include "backup/backup_directory.h"
#include "backup/checksum.h"
#include "backup/io_threads.h"
#include "backup/transfer_mode.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/sizes.h"

namespace tms {
namespace {

constexpr std::size_t kIoAlignment = 4096;
constexpr int kMaxNameAttempts = 8;  // names are random: a clash is already unlikely

// Thread-safe (unlike strerror): I/O threads build messages too.
std::string errno_text(int error) { return std::generic_category().message(error); }

std::string space_hint(int error) {
  return error == ENOSPC || error == EDQUOT
             ? "; free space there or choose another directory (TMS_DISK_BACKUP_DIR or "
               "set_disk_backup_dir)"
         : error == EMFILE || error == ENFILE
             ? "; every paused disk backup holds a file descriptor: raise the limit "
               "(ulimit -n) or use fewer, larger allocations"
             : std::string();
}

std::string describe_file(const std::string& dir) { return "disk backup file in '" + dir + "'"; }

/// Closes a descriptor when it goes out of scope; a failed close is logged
/// (the descriptor is gone either way).
class ScopedFd {
 public:
  ScopedFd(FileIo& io, int fd) : io_(io), fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (io_.close(fd_) != 0) {
      log(LogLevel::kWarning,
          "closing a disk backup directory failed: close: " + errno_text(errno));
    }
  }

 private:
  FileIo& io_;
  int fd_;
};

/// A file larger than RLIMIT_FSIZE would get the process SIGXFSZ (or EFBIG
/// where that is ignored) part way through: refuse before writing.
void check_file_size_limit(std::size_t bytes, const std::string& dir) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  if (bytes <= limit.rlim_cur) return;
  throw IoError("a disk backup of " + describe_bytes(bytes) + " in '" + dir +
                "' would exceed this process's file size limit (RLIMIT_FSIZE, ulimit -f) of " +
                describe_bytes(limit.rlim_cur) +
                "; raise the limit, or back this allocation up in host memory instead");
}

/// The errors of a write-back that mean the data did not reach the file.
bool lost_data(int error) { return error == EIO || error == ENOSPC || error == EDQUOT; }

/// Calls `call` again while a signal interrupts it (-1 with EINTR).
template <typename Call>
auto retry_interrupted(Call call) {
  auto result = call();
  while (result < 0 && errno == EINTR) result = call();
  return result;
}

/// Reserves the whole file before the first write: a full disk fails here,
/// before anything is written, and the writes that follow overwrite
/// allocated space, which filesystems take in parallel (ext4 serializes
/// direct writes that extend a file). Filesystems without fallocate skip it.
/// @throws IoError.
void reserve_space(FileIo& io, int fd, std::size_t bytes, const std::string& where) {
  const int result =
      retry_interrupted([&] { return io.fallocate(fd, 0, static_cast<off_t>(bytes)); });
  if (result == 0 || errno == EOPNOTSUPP || errno == ENOSYS) return;
  const int error = errno;
  throw IoError("reserving " + describe_bytes(bytes) + " for a " + where +
                " failed: fallocate: " + errno_text(error) + space_hint(error));
}

/// One pwrite or pread of a block (`call`) in the file's mode
/// (backup/transfer_mode.h), retrying EINTR; sets `cached` when it went
/// through the page cache.
template <typename Call>
ssize_t transfer(TransferMode& mode, Call call, bool& cached) {
  bool buffered = false;
  const ssize_t result = retry_interrupted([&] { return mode.run(call, buffered); });
  cached = cached || buffered;
  return result;
}

/// Writes one block (`size`, a multiple of 4 KiB, at `offset`), retrying
/// EINTR and short writes; what went through the page cache (no O_DIRECT,
/// or a direct write refused: backup/transfer_mode.h) is written back and
/// dropped from it. @returns its checksum.
std::uint64_t write_block(FileIo& io, TransferMode& mode, const std::uint8_t* data,
                          std::size_t size, std::size_t offset, const std::string& where) {
  const int fd = mode.fd();
  bool cached = false;
  for (std::size_t done = 0; done < size;) {
    const ssize_t written = transfer(
        mode,
        [&] { return io.pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done)); },
        cached);
    if (written <= 0) {
      const int error = written == 0 ? ENOSPC : errno;
      throw IoError("writing " + where + " failed at byte " + std::to_string(offset + done) +
                    ": pwrite: " + errno_text(error) + space_hint(error) +
                    mode.switch_failure(error));
    }
    done += static_cast<std::size_t>(written);
  }
  Checksum checksum;
  checksum.update(data, size);
  if (cached) {
    const int result = retry_interrupted(
        [&] { return io.sync_range(fd, static_cast<off_t>(offset), static_cast<off_t>(size)); });
    if (result != 0 && lost_data(errno)) {
      const int error = errno;
      throw IoError("writing " + where + " failed at byte " + std::to_string(offset) +
                    ": sync_file_range: " + errno_text(error) + space_hint(error));
    }
    // Advice only: pages it cannot drop (write-back refused above) stay
    // cached, and the contents are right either way.
    if (result == 0) (void)io.drop_cached(fd, static_cast<off_t>(offset), static_cast<off_t>(size));
  }
  return checksum.digest();
}

/// Reads one block back, retrying EINTR and short reads, drops what went
/// through the page cache from it, and checks it against `expected`.
void read_block(FileIo& io, TransferMode& mode, std::uint8_t* data, std::size_t size,
                std::size_t offset, std::uint64_t expected, const std::string& where) {
  const int fd = mode.fd();
  bool cached = false;
  for (std::size_t done = 0; done < size;) {
    const ssize_t got = transfer(
        mode,
        [&] { return io.pread(fd, data + done, size - done, static_cast<off_t>(offset + done)); },
        cached);
    if (got < 0) {
      const int error = errno;
      throw IoError("reading " + where + " failed at byte " + std::to_string(offset + done) +
                    ": pread: " + errno_text(error) + mode.switch_failure(error));
    }
    if (got == 0) {
      throw IoError(where + " ends at byte " + std::to_string(offset + done) + ", before the " +
                    std::to_string(offset + size) + " bytes it should hold (was it truncated?)");
    }
    done += static_cast<std::size_t>(got);
  }
  if (cached) (void)io.drop_cached(fd, static_cast<off_t>(offset), static_cast<off_t>(size));
  Checksum checksum;
  checksum.update(data, size);
  if (checksum.digest() != expected) {
    throw IoError(where + " was changed or damaged while paused (the checksum of its bytes " +
                  std::to_string(offset) + " to " + std::to_string(offset + size) +
                  " does not match what was written)");
  }
}

/// The closing thread's work (DiskBackupIo::close_later): the descriptor is
/// gone whatever close() says, so a failure is only worth a line.
void close_restored(FileIo& io, int fd) noexcept {
  if (io.close(fd) == 0) return;
  const int error = errno;
  try {
    log(LogLevel::kWarning, "closing a restored disk backup file failed: close: " +
                                errno_text(error) + " (its space is freed anyway)");
  } catch (const std::exception&) {
    // No memory for the message: nothing else to do about it.
  }
}

/// Records the mode a file's transfers ended in (`file_direct`), and says
/// so when the filesystem made it switch. Never throws: it runs on the way
/// out of a failed transfer too.
void record_mode(const TransferMode& mode, bool& file_direct, const std::string& dir) noexcept {
  if (!file_direct || mode.direct()) return;
  file_direct = false;
  try {
    log(LogLevel::kInfo, "the filesystem of '" + dir +
                             "' took O_DIRECT at open but refused direct transfers: this disk "
                             "backup file goes through the page cache (written back and "
                             "dropped block by block)");
  } catch (const std::exception&) {
    // No memory for the message: the mode is recorded all the same.
  }
}

}  // namespace

// ---- DiskBackupIo -------------------------------------------------------------

DiskBackupIo::DiskBackupIo(HostMemory& host, FileIo& io, CopyPipeline& copies,
                           DiskBackupOptions options)
    : host_(host),
      io_(io),
      copies_(copies),
      chunk_bytes_(round_up(std::max<std::size_t>(options.chunk_bytes, 1), kIoAlignment)),
      write_depth_(options.write_depth),
      read_depth_(options.read_depth),
      direct_io_(options.direct_io),
      closer_([&io](const int& fd) { close_restored(io, fd); }) {
  if (write_depth_ == 0 || read_depth_ == 0) {
    throw InvalidArgument("disk backup needs at least one read and one write in flight");
  }
}

std::string DiskBackupIo::prepare_directory(const std::string& dir) const {
  return prepare_backup_directory(io_, dir);
}

void DiskBackupIo::check_directory(const std::string& dir) const {
  io_.close(open_backup_directory(io_, dir));
}

std::size_t DiskBackupIo::slots() const { return std::max(write_depth_, read_depth_) + 1; }

void DiskBackupIo::close_later(DiskFile file) noexcept {
  const int fd = file.release_descriptor();
  if (fd >= 0) closer_.push(fd);
}

std::uint8_t* DiskBackupIo::staging(std::size_t size) {
  const std::size_t needed = std::min(round_up(size, kIoAlignment), slots() * chunk_bytes_);
  if (staging_.size() < needed) {
    staging_.reset();  // give the smaller one back before taking the larger
    staging_ = host_.acquire_one(needed, HostMemoryKind::kPinned);
  }
  return staging_.data();
}

void DiskBackupIo::start_copy(bool to_host, int device, std::size_t lane,
                              std::size_t staging_offset, DevicePtr device_ptr, std::size_t size) {
  for (std::size_t done = 0, piece = 0; done < size; done += piece) {
    piece = staging_.copy_extent(staging_offset + done, size - done);
    std::uint8_t* host = staging_.data() + staging_offset + done;
    if (to_host) {
      copies_.start_to_host(device, lane, host, device_ptr + done, piece);
    } else {
      copies_.start_to_device(device, lane, device_ptr + done, host, piece);
    }
  }
}

int DiskBackupIo::open_direct_if_possible(int dir_fd, const char* path, int flags, bool& direct) {
  direct = direct_io_;
  if (direct_io_) {
    const int fd = io_.open(dir_fd, path, flags | O_DIRECT, 0600);
    // EINVAL: this filesystem does not do direct I/O; go through the cache.
    if (fd >= 0 || errno != EINVAL) return fd;
    direct = false;
  }
  return io_.open(dir_fd, path, flags, 0600);
}

DiskFile DiskBackupIo::create_file(int dir_fd, const std::string& dir) {
  // Unnamed: nobody else can open it, and nothing is left after any exit.
  bool direct = false;
  int fd = open_direct_if_possible(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, direct);
  if (fd >= 0) {
    DiskFile file(io_, fd, dir);
    file.direct_ = direct;
    return file;
  }
  // EOPNOTSUPP (EISDIR before Linux 3.11): no unnamed files on this
  // filesystem; use a random name and unlink it at once.
  if (errno != EOPNOTSUPP && errno != EISDIR) {
    const int error = errno;
    throw IoError("could not create a " + describe_file(dir) + ": open: " + errno_text(error) +
                  space_hint(error));
  }
  for (int attempt = 1;; ++attempt) {
    const std::string name = new_backup_file_name();
    // Created without O_DIRECT: Linux creates the file before it refuses
    // O_DIRECT with EINVAL, so an O_EXCL retry of the same name would fail
    // and leave the file behind. Direct I/O, where the filesystem has it,
    // comes from opening the new file a second time.
    fd = io_.open(dir_fd, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      const int error = errno;
      if (error == EEXIST && attempt < kMaxNameAttempts) continue;
      throw IoError("could not create disk backup file '" + dir + "/" + name +
                    "': open: " + errno_text(error) + space_hint(error));
    }
    if (direct_io_) {
      const int direct_fd =
          io_.open(dir_fd, name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_DIRECT, 0);
      if (direct_fd >= 0) {
        (void)io_.close(fd);  // nothing written through it yet
        fd = direct_fd;
        direct = true;
      }
    }
    DiskFile file(io_, fd, dir);
    file.direct_ = direct;
    // If this unlink fails, the file keeps its name; the caller parks it
    // (take_name) to be removed later. The data never depends on the name.
    if (io_.unlink(dir_fd, name.c_str()) != 0 && errno != ENOENT) file.name_ = dir + "/" + name;
    return file;
  }
}

DiskFile DiskBackupIo::save(const std::string& dir, int device, DevicePtr src, std::size_t size) {
  check_file_size_limit(round_up(size, kIoAlignment), dir);
  // Files given back a moment ago may still be closing (close_later),
  // holding descriptors and disk space: then a save that fails (no
  // descriptor left, no space at fallocate or, where the filesystem has no
  // fallocate, at a write) is worth one more try once they are closed.
  const bool closing = closer_.busy();
  try {
    return save_once(dir, device, src, size);
  } catch (const IoError&) {
    if (!closing) throw;
  }
  wait_closed();
  return save_once(dir, device, src, size);
}

DiskFile DiskBackupIo::save_once(const std::string& dir, int device, DevicePtr src,
                                 std::size_t size) {
  const std::size_t file_bytes = round_up(size, kIoAlignment);
  std::uint8_t* const base = staging(size);

  // The DiskFile owns the file from here, so any failure below removes it.
  DiskFile file;
  {
    const int dir_fd = open_backup_directory(io_, dir);
    const ScopedFd dir_guard(io_, dir_fd);
    file = create_file(dir_fd, dir);
  }
  const std::string where = describe_file(dir);
  if (file_bytes > 0) reserve_space(io_, file.fd(), file_bytes, where);
  const std::size_t blocks = (size + chunk_bytes_ - 1) / chunk_bytes_;
  file.checksums_.assign(blocks, 0);
  auto length = [&](std::size_t k) { return std::min(chunk_bytes_, size - k * chunk_bytes_); };
  // Block k lives in slot k % slots while it is copied, then written.
  const std::size_t slots = std::min(blocks, write_depth_ + 1);
  auto slot_offset = [&](std::size_t k) { return (k % slots) * chunk_bytes_; };
  TransferMode mode(io_, file.fd(), file.direct_);
  IoThreads writers(blocks > 1 ? std::min(blocks, write_depth_) : 0, slots);
  try {
    if (blocks > 0) start_copy(true, device, 0, 0, src, length(0));
    for (std::size_t k = 0; k < blocks; ++k) {
      copies_.wait(device, k);  // block k's copy is the only one on its lane
      std::uint8_t* const data = base + slot_offset(k);
      const std::size_t bytes = length(k);
      const std::size_t padded = round_up(bytes, kIoAlignment);
      std::memset(data + bytes, 0, padded - bytes);
      writers.run(k % slots, [&, k, data, padded] {
        file.checksums_[k] = write_block(io_, mode, data, padded, k * chunk_bytes_, where);
      });
      if (k + 1 < blocks) {
        // Up to write_depth writes stay in flight while the next block is
        // copied into the slot the oldest of them has just left.
        writers.wait((k + 1) % slots);
        start_copy(true, device, k + 1, slot_offset(k + 1), src + (k + 1) * chunk_bytes_,
                   length(k + 1));
      }
    }
    writers.wait_all();
  } catch (...) {
    // Nothing may still write the file or read the staging buffer.
    writers.wait_quietly();
    copies_.drain_quietly(device);
    throw;
  }
  record_mode(mode, file.direct_, dir);
  file.bytes_ = file_bytes;
  return file;
}

void DiskBackupIo::load(const DiskFile& file, int device, DevicePtr dst, std::size_t size) {
  const std::string where = describe_file(file.directory());
  const std::size_t blocks = (size + chunk_bytes_ - 1) / chunk_bytes_;
  if (file.fd() < 0 || file.bytes_ != round_up(size, kIoAlignment) ||
      file.checksums_.size() != blocks) {
    throw IoError(where + " does not hold this allocation's " + std::to_string(size) + " bytes");
  }
  std::uint8_t* const base = staging(size);
  auto length = [&](std::size_t k) { return std::min(chunk_bytes_, size - k * chunk_bytes_); };
  // Block k lives in slot k % slots while it is read, then copied.
  const std::size_t slots = std::min(blocks, read_depth_ + 1);
  auto slot_offset = [&](std::size_t k) { return (k % slots) * chunk_bytes_; };
  TransferMode mode(io_, file.fd(), file.direct_);
  IoThreads readers(blocks > 1 ? std::min(blocks, read_depth_) : 0, slots);
  auto start_read = [&](std::size_t k) {
    std::uint8_t* const data = base + slot_offset(k);
    const std::size_t padded = round_up(length(k), kIoAlignment);
    readers.run(k % slots, [&, k, data, padded] {
      read_block(io_, mode, data, padded, k * chunk_bytes_, file.checksums_[k], where);
    });
  };
  try {
    for (std::size_t k = 0; k < std::min(blocks, read_depth_); ++k) start_read(k);
    for (std::size_t k = 0; k < blocks; ++k) {
      readers.wait(k % slots);  // read and checked
      start_copy(false, device, k, slot_offset(k), dst + k * chunk_bytes_, length(k));
      // Reads ahead while this copy runs, into the slot of the block copied
      // before it once that copy is done (with two or more lanes, this one
      // runs on the other lane).
      const std::size_t next = k + read_depth_;
      if (next >= blocks) continue;
      if (next >= slots) copies_.wait(device, next - slots);
      start_read(next);
    }
    const std::size_t lanes = std::min(blocks, copies_.options().streams_per_device);
    for (std::size_t lane = 0; lane < lanes; ++lane) copies_.wait(device, lane);
  } catch (...) {
    readers.wait_quietly();
    copies_.drain_quietly(device);
    // The file stays for a later resume: it keeps the mode its descriptor is in.
    record_mode(mode, file.direct_, file.directory());
    throw;
  }
  record_mode(mode, file.direct_, file.directory());
}

}  // namespace tms
