#include "core/vmm_handles.h"

namespace tms {

VaReservation::VaReservation(Driver& driver, ParkingLot& parking, std::size_t size,
                             std::size_t alignment)
    : parking_(&parking), va_(driver.reserve(size, alignment)), size_(size) {}

VaReservation& VaReservation::operator=(VaReservation&& other) noexcept {
  std::swap(parking_, other.parking_);
  std::swap(va_, other.va_);
  std::swap(size_, other.size_);
  return *this;
}

VaReservation::~VaReservation() {
  if (va_ != 0) parking_->free_reservation_or_park(va_, size_);
}

PhysicalMemory::PhysicalMemory(Driver& driver, ParkingLot& parking, int device, std::size_t size)
    : parking_(&parking), handle_(driver.create_physical(device, size)) {}

PhysicalMemory& PhysicalMemory::operator=(PhysicalMemory&& other) noexcept {
  std::swap(parking_, other.parking_);
  std::swap(handle_, other.handle_);
  return *this;
}

PhysicalMemory::~PhysicalMemory() {
  if (handle_ != 0) parking_->release_or_park(handle_);
}

Mapping::Mapping(Driver& driver, ParkingLot& parking, DevicePtr va, std::size_t size,
                 PhysicalHandle handle, int device)
    : parking_(&parking), size_(size) {
  driver.map(va, size, handle);
  try {
    driver.set_access(va, size, device);
  } catch (...) {
    // A throwing constructor runs no destructor: undo the map here.
    parking.unmap_or_park(va, size);
    throw;
  }
  va_ = va;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  std::swap(parking_, other.parking_);
  std::swap(va_, other.va_);
  std::swap(size_, other.size_);
  return *this;
}

Mapping::~Mapping() {
  if (va_ != 0) parking_->unmap_or_park(va_, size_);
}

}  // namespace tms
