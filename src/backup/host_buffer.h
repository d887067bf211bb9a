// Host memory holding the backup of one paused allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "driver/driver.h"

namespace tms {

/// Move-only owner of host memory from Driver::host_alloc.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(Driver& driver, std::size_t size, HostMemoryKind kind);
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  ~HostBuffer();

  [[nodiscard]] std::uint8_t* data() const { return static_cast<std::uint8_t*>(ptr_); }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] HostMemoryKind kind() const { return kind_; }
  [[nodiscard]] bool empty() const { return ptr_ == nullptr; }

  /// Frees now and reports a failure to the caller (the destructor can only
  /// log it). Empty afterwards either way.
  void reset();

 private:
  Driver* driver_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  HostMemoryKind kind_ = HostMemoryKind::kPinned;
};

}  // namespace tms
