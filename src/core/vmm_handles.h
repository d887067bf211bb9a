// Move-only owners of the device-memory resources one allocation is made of.
// Each gives its resource back in its destructor unless release()d, so a
// multi-step operation that fails half way unwinds what it already did.
// Destructors never throw: a give-back that fails goes to the ParkingLot to
// be retried later (the caller is already unwinding from the first error).
#pragma once

#include <cstddef>
#include <utility>

#include "core/parking_lot.h"
#include "driver/driver.h"

namespace tms {

/// A reserved range of device virtual addresses.
class VaReservation {
 public:
  VaReservation(Driver& driver, ParkingLot& parking, std::size_t size, std::size_t alignment);
  VaReservation(VaReservation&& other) noexcept { *this = std::move(other); }
  VaReservation& operator=(VaReservation&& other) noexcept;
  ~VaReservation();

  [[nodiscard]] DevicePtr va() const { return va_; }
  /// Gives up ownership; the caller now frees the range.
  DevicePtr release() { return std::exchange(va_, 0); }

 private:
  ParkingLot* parking_ = nullptr;
  DevicePtr va_ = 0;
  std::size_t size_ = 0;
};

/// Physical memory on one device.
class PhysicalMemory {
 public:
  PhysicalMemory(Driver& driver, ParkingLot& parking, int device, std::size_t size);
  PhysicalMemory(PhysicalMemory&& other) noexcept { *this = std::move(other); }
  PhysicalMemory& operator=(PhysicalMemory&& other) noexcept;
  ~PhysicalMemory();

  [[nodiscard]] PhysicalHandle handle() const { return handle_; }
  PhysicalHandle release() { return std::exchange(handle_, 0); }

 private:
  ParkingLot* parking_ = nullptr;
  PhysicalHandle handle_ = 0;
};

/// A mapping of physical memory into a reserved range, readable and writable
/// by `device` once constructed.
class Mapping {
 public:
  Mapping(Driver& driver, ParkingLot& parking, DevicePtr va, std::size_t size,
          PhysicalHandle handle, int device);
  Mapping(Mapping&& other) noexcept { *this = std::move(other); }
  Mapping& operator=(Mapping&& other) noexcept;
  ~Mapping();

  void release() { va_ = 0; }

 private:
  ParkingLot* parking_ = nullptr;
  DevicePtr va_ = 0;
  std::size_t size_ = 0;
};

}  // namespace tms
