#include "backup/host_buffer.h"

#include <exception>
#include <string>

#include "common/log.h"

namespace tms {

HostBuffer::HostBuffer(Driver& driver, std::size_t size, HostMemoryKind kind)
    : driver_(&driver), ptr_(driver.host_alloc(size, kind)), size_(size), kind_(kind) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  std::swap(driver_, other.driver_);
  std::swap(ptr_, other.ptr_);
  std::swap(size_, other.size_);
  std::swap(kind_, other.kind_);
  return *this;
}

void HostBuffer::reset() {
  if (ptr_ == nullptr) return;
  // On failure the buffer stays owned, so a later reset() or the destructor
  // can try again.
  driver_->host_free(ptr_, size_, kind_);
  ptr_ = nullptr;
  size_ = 0;
}

HostBuffer::~HostBuffer() {
  try {
    reset();
  } catch (const std::exception& error) {
    log(LogLevel::kError, std::string("could not free host backup memory: ") + error.what());
  }
}

}  // namespace tms
