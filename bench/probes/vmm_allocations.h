// Device allocations the way the engine holds them, for the probes of a
// pause's unmap and release calls (unmap_overlap_probe.cpp,
// cold_pause_probe.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include "driver/driver.h"

namespace tms::bench {

/// `count` allocations of `each` bytes on `device`, each with its own
/// reservation and physical memory, as the engine holds one per tensor;
/// written through a host-to-device copy of `fill` (`each` bytes) so that
/// the memory has been used.
class VmmAllocations {
 public:
  VmmAllocations(Driver& driver, int device, std::size_t count, std::size_t each, const void* fill,
                 StreamHandle stream)
      : driver_(driver), each_(each), vas_(count), handles_(count, 0), mapped_(count, 0) {
    for (std::size_t i = 0; i < count; ++i) {
      vas_[i] = driver.reserve(each, driver.granularity(device));
      handles_[i] = driver.create_physical(device, each);
      driver.map(vas_[i], each, handles_[i]);
      mapped_[i] = 1;
      driver.set_access(vas_[i], each, device);
      driver.copy_to_device_async(device, vas_[i], fill, each, stream);
    }
    driver.synchronize_stream(device, stream);
  }
  ~VmmAllocations() {
    try {
      for (std::size_t i = 0; i < vas_.size(); ++i) {
        if (mapped_[i] != 0) driver_.unmap(vas_[i], each_);
        if (handles_[i] != 0) driver_.release_physical(handles_[i]);
        driver_.free_reservation(vas_[i], each_);
      }
    } catch (const std::exception&) {  // a probe: the process ends soon
    }
  }
  VmmAllocations(const VmmAllocations&) = delete;
  VmmAllocations& operator=(const VmmAllocations&) = delete;

  [[nodiscard]] std::size_t count() const { return vas_.size(); }
  [[nodiscard]] DevicePtr va(std::size_t i) const { return vas_[i]; }
  void unmap(std::size_t i) {
    driver_.unmap(vas_[i], each_);
    mapped_[i] = 0;
  }
  void release(std::size_t i) {
    driver_.release_physical(handles_[i]);
    handles_[i] = 0;
  }
  /// Unmaps and releases every allocation, as a pause does after its copies.
  void give_back_all() {
    for (std::size_t i = 0; i < count(); ++i) {
      unmap(i);
      release(i);
    }
  }

 private:
  Driver& driver_;
  std::size_t each_;
  std::vector<DevicePtr> vas_;
  std::vector<PhysicalHandle> handles_;
  std::vector<std::uint8_t> mapped_;
};

}  // namespace tms::bench
