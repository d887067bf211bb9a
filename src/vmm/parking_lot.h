// Resources whose give-back failed, kept to be given back later.
//
// Giving a resource back (unmap, cuMemRelease, cuMemAddressFree, removing a
// backup file) is the point of no return of an operation, and may also
// happen while unwinding from another failure. When it fails, the operation
// must neither fail nor leak: the resource is parked here, and the engine
// retries at the start of its next operation and at teardown.
//
// The VMM owners (vmm/vmm_handles.h) give back through the *_or_park calls
// as their deleters; the lot itself keeps raw values, as the owner of last
// resort of what no owner could give back.
#pragma once

#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

#include "driver/driver.h"
#include "io/disk_file.h"

namespace tms {

class ParkingLot {
 public:
  explicit ParkingLot(Driver& driver) : driver_(driver) {}
  ParkingLot(const ParkingLot&) = delete;
  ParkingLot& operator=(const ParkingLot&) = delete;

  // Each gives the resource back now, or parks it if that fails. Never throw.
  void unmap_or_park(DevicePtr va, std::size_t size) noexcept;
  void release_or_park(PhysicalHandle handle) noexcept;
  void free_reservation_or_park(DevicePtr va, std::size_t size) noexcept;
  void remove_or_park(DiskFile file) noexcept;

  /// Tries every parked resource again, mappings before the memory and
  /// address ranges they use. What fails again stays parked.
  void retry() noexcept;
  /// Removes parked files without retrying the rest (exit handlers).
  void remove_files() noexcept;
  [[nodiscard]] std::size_t size() const;

 private:
  Driver& driver_;
  mutable std::mutex mutex_;
  std::vector<std::pair<DevicePtr, std::size_t>> mappings_;
  std::vector<PhysicalHandle> handles_;
  std::vector<std::pair<DevicePtr, std::size_t>> reservations_;
  std::vector<DiskFile> files_;
};

}  // namespace tms
