#include "io/disk_file.h"

#include <fcntl.h>

#include <cerrno>
#include <exception>
#include <system_error>

#include "common/errors.h"
#include "common/log.h"

namespace tms {

DiskFile& DiskFile::operator=(DiskFile&& other) noexcept {
  std::swap(io_, other.io_);
  std::swap(fd_, other.fd_);
  std::swap(name_, other.name_);
  std::swap(directory_, other.directory_);
  std::swap(direct_, other.direct_);
  std::swap(bytes_, other.bytes_);
  std::swap(checksums_, other.checksums_);
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
      log(LogLevel::kWarning, "closing a disk backup file in '" + directory_ +
                                  "' failed: close: " + std::generic_category().message(errno) +
                                  " (its space is freed anyway)");
    }
    fd_ = -1;
  }
  if (name_.empty()) return;
  if (io_->unlink(AT_FDCWD, name_.c_str()) != 0 && errno != ENOENT) {
    const int error = errno;
    throw IoError("could not remove disk backup file '" + name_ +
                  "': unlink failed: " + std::generic_category().message(error));
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

}  // namespace tms
