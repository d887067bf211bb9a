#include "backup/disk_backup.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "backup/backup_directory.h"
#include "backup/checksum.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/sizes.h"

namespace tms {
namespace {

constexpr std::size_t kIoAlignment = 4096;
constexpr int kMaxNameAttempts = 8;  // names are random: a clash is already unlikely

std::string errno_text(int error) { return std::strerror(error); }

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

}  // namespace

// ---- DiskFile ---------------------------------------------------------------

DiskFile& DiskFile::operator=(DiskFile&& other) noexcept {
  std::swap(io_, other.io_);
  std::swap(fd_, other.fd_);
  std::swap(name_, other.name_);
  std::swap(directory_, other.directory_);
  std::swap(bytes_, other.bytes_);
  std::swap(checksum_, other.checksum_);
  return *this;
}

DiskFile DiskFile::take_name() {
  DiskFile name_only;
  name_only.io_ = io_;
  name_only.directory_ = directory_;
  std::swap(name_only.name_, name_);
  return name_only;
}

void DiskFile::remove() {
  if (fd_ >= 0) {
    if (io_->close(fd_) != 0) {
      log(LogLevel::kWarning, "closing a " + describe_file(directory_) + " failed: close: " +
                                  errno_text(errno) + " (its space is freed anyway)");
    }
    fd_ = -1;
  }
  if (name_.empty()) return;
  if (io_->unlink(AT_FDCWD, name_.c_str()) != 0 && errno != ENOENT) {
    const int error = errno;
    throw IoError("could not remove disk backup file '" + name_ +
                  "': unlink failed: " + errno_text(error));
  }
  name_.clear();
}

DiskFile::~DiskFile() {
  try {
    remove();
  } catch (const std::exception& error) {
    log(LogLevel::kError, error.what());
  }
}

// ---- DiskBackupIo -------------------------------------------------------------

DiskBackupIo::DiskBackupIo(HostMemory& host, FileIo& io, CopyPipeline& copies,
                           DiskBackupOptions options)
    : host_(host),
      io_(io),
      copies_(copies),
      chunk_bytes_(round_up(std::max<std::size_t>(options.chunk_bytes, 1), kIoAlignment)),
      direct_io_(options.direct_io) {}

std::string DiskBackupIo::prepare_directory(const std::string& dir) const {
  return prepare_backup_directory(io_, dir);
}

void DiskBackupIo::check_directory(const std::string& dir) const {
  io_.close(open_backup_directory(io_, dir));
}

std::uint8_t* DiskBackupIo::staging(std::size_t size) {
  const std::size_t needed = std::min(round_up(size, kIoAlignment), 2 * chunk_bytes_);
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

int DiskBackupIo::open_direct_if_possible(int dir_fd, const char* path, int flags) {
  if (direct_io_) {
    const int fd = io_.open(dir_fd, path, flags | O_DIRECT, 0600);
    // EINVAL: this filesystem does not do direct I/O; go through the cache.
    if (fd >= 0 || errno != EINVAL) return fd;
  }
  return io_.open(dir_fd, path, flags, 0600);
}

DiskFile DiskBackupIo::create_file(int dir_fd, const std::string& dir) {
  // Unnamed: nobody else can open it, and nothing is left after any exit.
  int fd = open_direct_if_possible(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC);
  if (fd >= 0) return DiskFile(io_, fd, dir);
  // EOPNOTSUPP (EISDIR before Linux 3.11): no unnamed files on this
  // filesystem; use a random name and unlink it at once.
  if (errno != EOPNOTSUPP && errno != EISDIR) {
    const int error = errno;
    throw IoError("could not create a " + describe_file(dir) + ": open: " + errno_text(error) +
                  space_hint(error));
  }
  for (int attempt = 1;; ++attempt) {
    const std::string name = new_backup_file_name();
    fd = open_direct_if_possible(dir_fd, name.c_str(),
                                 O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      if (error == EEXIST && attempt < kMaxNameAttempts) continue;
      throw IoError("could not create disk backup file '" + dir + "/" + name +
                    "': open: " + errno_text(error) + space_hint(error));
    }
    DiskFile file(io_, fd, dir);
    // If this unlink fails, the file keeps its name; the caller parks it
    // (take_name) to be removed later. The data never depends on the name.
    if (io_.unlink(dir_fd, name.c_str()) != 0 && errno != ENOENT) file.name_ = dir + "/" + name;
    return file;
  }
}

void DiskBackupIo::write_all(int fd, const std::uint8_t* data, std::size_t size, std::size_t offset,
                             const std::string& where) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t written =
        io_.pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      const int error = written == 0 ? ENOSPC : errno;
      throw IoError("writing " + where + " failed at byte " + std::to_string(offset + done) +
                    ": pwrite: " + errno_text(error) + space_hint(error));
    }
    done += static_cast<std::size_t>(written);
  }
}

void DiskBackupIo::read_all(int fd, std::uint8_t* data, std::size_t size, std::size_t offset,
                            const std::string& where) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = io_.pread(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      throw IoError("reading " + where + " failed at byte " + std::to_string(offset + done) +
                    ": pread: " + errno_text(error));
    }
    if (got == 0) {
      throw IoError(where + " ends at byte " + std::to_string(offset + done) + ", before the " +
                    std::to_string(offset + size) + " bytes it should hold (was it truncated?)");
    }
    done += static_cast<std::size_t>(got);
  }
}

DiskFile DiskBackupIo::save(const std::string& dir, int device, DevicePtr src, std::size_t size) {
  const std::size_t file_bytes = round_up(size, kIoAlignment);
  check_file_size_limit(file_bytes, dir);
  std::uint8_t* const base = staging(size);
  auto half = [&](std::size_t k) { return base + (k % 2) * chunk_bytes_; };

  // The DiskFile owns the file from here, so any failure below removes it.
  DiskFile file;
  {
    const int dir_fd = open_backup_directory(io_, dir);
    const ScopedFd dir_guard(io_, dir_fd);
    file = create_file(dir_fd, dir);
  }
  const std::string where = describe_file(dir);
  const std::size_t chunks = (size + chunk_bytes_ - 1) / chunk_bytes_;
  auto length = [&](std::size_t k) { return std::min(chunk_bytes_, size - k * chunk_bytes_); };
  ChecksumWorker checksum;
  try {
    start_copy(true, device, 0, 0, src, length(0));
    for (std::size_t k = 0; k < chunks; ++k) {
      copies_.wait(device, k % 2);
      const std::size_t bytes = length(k);
      const std::size_t padded = round_up(bytes, kIoAlignment);
      std::memset(half(k) + bytes, 0, padded - bytes);
      // Hashed while it is written; add() also waits for the previous
      // chunk's hash, whose half the next copy overwrites.
      checksum.add(half(k), padded);
      if (k + 1 < chunks) {
        start_copy(true, device, (k + 1) % 2, ((k + 1) % 2) * chunk_bytes_,
                   src + (k + 1) * chunk_bytes_, length(k + 1));
      }
      write_all(file.fd(), half(k), padded, k * chunk_bytes_, where);
    }
    file.checksum_ = checksum.digest();
  } catch (...) {
    copies_.drain_quietly(device);  // no copy may still write into staging
    throw;
  }
  file.bytes_ = file_bytes;
  return file;
}

void DiskBackupIo::load(const DiskFile& file, int device, DevicePtr dst, std::size_t size) {
  const std::string where = describe_file(file.directory());
  if (file.fd() < 0 || file.bytes_ != round_up(size, kIoAlignment)) {
    throw IoError(where + " does not hold this allocation's " + std::to_string(size) + " bytes");
  }
  std::uint8_t* const base = staging(size);
  auto half = [&](std::size_t k) { return base + (k % 2) * chunk_bytes_; };
  const std::size_t chunks = (size + chunk_bytes_ - 1) / chunk_bytes_;
  ChecksumWorker checksum;
  try {
    for (std::size_t k = 0; k < chunks; ++k) {
      // The copy that used this half two chunks ago must be done before the
      // half is refilled (its hash finished when chunk k-1 was added); the
      // previous chunk's copy and hash run during this read.
      if (k >= 2) copies_.wait(device, k % 2);
      const std::size_t bytes = std::min(chunk_bytes_, size - k * chunk_bytes_);
      const std::size_t padded = round_up(bytes, kIoAlignment);
      read_all(file.fd(), half(k), padded, k * chunk_bytes_, where);
      checksum.add(half(k), padded);
      start_copy(false, device, k % 2, (k % 2) * chunk_bytes_, dst + k * chunk_bytes_, bytes);
    }
    copies_.wait(device, 0);
    if (chunks > 1) copies_.wait(device, 1);
    if (checksum.digest() != file.checksum_) {
      throw IoError(where +
                    " was changed or damaged while paused (its checksum does not match "
                    "what was written)");
    }
  } catch (...) {
    copies_.drain_quietly(device);
    throw;
  }
}

}  // namespace tms
