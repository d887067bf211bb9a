#include "backup/disk_backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <utility>

#include "common/errors.h"
#include "common/log.h"

namespace tms {
namespace {

constexpr std::size_t kIoAlignment = 4096;
constexpr int kMaxNameAttempts = 64;

std::size_t round_up(std::size_t value, std::size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

std::string errno_text(int error) { return std::strerror(error); }

std::string space_hint(int error) {
  return error == ENOSPC || error == EDQUOT
             ? "; free space there or choose another directory (TMS_DISK_BACKUP_DIR or "
               "set_disk_backup_dir)"
             : std::string();
}

/// Closes a descriptor when it goes out of scope; a failed close is logged
/// (the descriptor is gone either way, and the data was already moved).
class ScopedFd {
 public:
  ScopedFd(FileIo& io, int fd) : io_(io), fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (io_.close(fd_) != 0) {
      log(LogLevel::kWarning, "closing a disk backup file failed: close: " + errno_text(errno));
    }
  }
  [[nodiscard]] int get() const { return fd_; }

 private:
  FileIo& io_;
  int fd_;
};

}  // namespace

// ---- DiskFile ---------------------------------------------------------------

DiskFile& DiskFile::operator=(DiskFile&& other) noexcept {
  std::swap(io_, other.io_);
  std::swap(path_, other.path_);
  return *this;
}

void DiskFile::remove() {
  if (path_.empty()) return;
  if (io_->unlink(path_.c_str()) != 0 && errno != ENOENT) {
    const int error = errno;
    throw IoError("could not remove disk backup file '" + path_ +
                  "': unlink failed: " + errno_text(error));
  }
  path_.clear();
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

void DiskBackupIo::check_directory(const std::string& dir) const {
  if (io_.access(dir.c_str(), W_OK | X_OK) != 0) {
    const int error = errno;
    throw IoError("disk backup directory '" + dir +
                  "' is not usable (access: " + errno_text(error) +
                  "); create it, make it writable, or choose another with TMS_DISK_BACKUP_DIR "
                  "or set_disk_backup_dir");
  }
}

std::uint8_t* DiskBackupIo::staging() {
  if (staging_.empty()) staging_ = host_.acquire_one(2 * chunk_bytes_, HostMemoryKind::kPinned);
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

int DiskBackupIo::open_file(const std::string& path, int flags, int& error) {
  int fd = -1;
  if (direct_io_) {
    fd = io_.open(path.c_str(), flags | O_DIRECT, 0600);
    // EINVAL: this filesystem does not do direct I/O; go through the cache.
    if (fd < 0 && errno != EINVAL) {
      error = errno;
      return -1;
    }
  }
  if (fd < 0) fd = io_.open(path.c_str(), flags, 0600);
  error = fd < 0 ? errno : 0;
  return fd;
}

void DiskBackupIo::write_all(int fd, const std::uint8_t* data, std::size_t size, std::size_t offset,
                             const std::string& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t written =
        io_.pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      const int error = written == 0 ? ENOSPC : errno;
      throw IoError("writing disk backup file '" + path + "' failed at byte " +
                    std::to_string(offset + done) + ": pwrite: " + errno_text(error) +
                    space_hint(error));
    }
    done += static_cast<std::size_t>(written);
  }
}

void DiskBackupIo::read_all(int fd, std::uint8_t* data, std::size_t size, std::size_t offset,
                            const std::string& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = io_.pread(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      throw IoError("reading disk backup file '" + path + "' failed at byte " +
                    std::to_string(offset + done) + ": pread: " + errno_text(error));
    }
    if (got == 0) {
      throw IoError("disk backup file '" + path + "' ends at byte " +
                    std::to_string(offset + done) + ", before the " +
                    std::to_string(offset + size) + " bytes it should hold (was it truncated?)");
    }
    done += static_cast<std::size_t>(got);
  }
}

DiskFile DiskBackupIo::save(const std::string& dir, int device, DevicePtr src, std::size_t size) {
  std::uint8_t* const base = staging();
  std::uint8_t* const halves[2] = {base, base + chunk_bytes_};

  // Create the file. The DiskFile owns it from here, so any failure below
  // unlinks it.
  char name[96];
  std::string path;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    if (attempt == 0) {
      std::snprintf(name, sizeof(name), "/tms-backup-%ld-%llx.bin", static_cast<long>(getpid()),
                    static_cast<unsigned long long>(src));
    } else {
      std::snprintf(name, sizeof(name), "/tms-backup-%ld-%llx-%d.bin", static_cast<long>(getpid()),
                    static_cast<unsigned long long>(src), attempt);
    }
    path = dir + name;
    int error = 0;
    fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, error);
    // EEXIST: a stale file of a dead process with the same pid; try another name.
    if (fd < 0 && (error != EEXIST || attempt + 1 >= kMaxNameAttempts)) {
      throw IoError("could not create disk backup file '" + path + "': open: " + errno_text(error) +
                    space_hint(error));
    }
  }
  DiskFile file(io_, path);
  {
    const ScopedFd guard(io_, fd);
    const std::size_t chunks = (size + chunk_bytes_ - 1) / chunk_bytes_;
    auto length = [&](std::size_t k) { return std::min(chunk_bytes_, size - k * chunk_bytes_); };
    try {
      start_copy(true, device, 0, 0, src, length(0));
      for (std::size_t k = 0; k < chunks; ++k) {
        copies_.wait(device, k % 2);
        // The next chunk's copy runs while this one is written.
        if (k + 1 < chunks) {
          start_copy(true, device, (k + 1) % 2, ((k + 1) % 2) * chunk_bytes_,
                     src + (k + 1) * chunk_bytes_, length(k + 1));
        }
        const std::size_t bytes = length(k);
        const std::size_t padded = round_up(bytes, kIoAlignment);
        std::memset(halves[k % 2] + bytes, 0, padded - bytes);
        write_all(fd, halves[k % 2], padded, k * chunk_bytes_, path);
      }
    } catch (...) {
      copies_.drain_quietly(device);  // no copy may still write into staging
      throw;
    }
  }
  return file;
}

void DiskBackupIo::load(const DiskFile& file, int device, DevicePtr dst, std::size_t size) {
  std::uint8_t* const base = staging();
  std::uint8_t* const halves[2] = {base, base + chunk_bytes_};
  int error = 0;
  const int fd = open_file(file.path(), O_RDONLY | O_CLOEXEC, error);
  if (fd < 0) {
    throw IoError("could not open disk backup file '" + file.path() +
                  "': open: " + errno_text(error));
  }
  const ScopedFd guard(io_, fd);
  const std::size_t chunks = (size + chunk_bytes_ - 1) / chunk_bytes_;
  try {
    for (std::size_t k = 0; k < chunks; ++k) {
      // The copy that used this half two chunks ago must be done before the
      // half is refilled; the previous chunk's copy runs during this read.
      if (k >= 2) copies_.wait(device, k % 2);
      const std::size_t bytes = std::min(chunk_bytes_, size - k * chunk_bytes_);
      read_all(fd, halves[k % 2], round_up(bytes, kIoAlignment), k * chunk_bytes_, file.path());
      start_copy(false, device, k % 2, (k % 2) * chunk_bytes_, dst + k * chunk_bytes_, bytes);
    }
    copies_.wait(device, 0);
    if (chunks > 1) copies_.wait(device, 1);
  } catch (...) {
    copies_.drain_quietly(device);
    throw;
  }
}

}  // namespace tms
