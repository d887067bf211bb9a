#include "backup/transfer_mode.h"

#include <system_error>

namespace tms {

bool TransferMode::direct() const {
  std::shared_lock lock(mutex_);
  return direct_;
}

bool TransferMode::switch_to_buffered() {
  const std::lock_guard lock(mutex_);
  if (!direct_) return true;             // another transfer switched it
  if (switch_error_ != 0) return false;  // tried before and failed: once per file
  if (io_.clear_direct(fd_) != 0) {
    switch_error_ = errno;
    return false;
  }
  direct_ = false;
  return true;
}

std::string TransferMode::switch_failure(int error) const {
  if (error != EINVAL) return {};
  {
    std::shared_lock lock(mutex_);
    error = switch_error_;
  }
  if (error == 0) return {};
  return " (the filesystem took O_DIRECT at open but refuses direct transfers; switching the "
         "file to buffered I/O failed: fcntl: " +
         std::generic_category().message(error) + ")";
}

}  // namespace tms
