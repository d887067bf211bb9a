// Owners of the device-memory resources one allocation is made of: a VA
// range, the physical memory behind it, and the mapping of one onto the
// other (common/unique_handle.h has the shape they share).
//
// Each has a factory that makes the resource (reserve, create, map) and one
// that adopts a resource that already exists (what an allocation record
// holds, when pause, free or teardown take it apart). Either way the owner
// gives it back when it goes, unless release()d: a multi-step operation that
// fails half way unwinds what it already did, and code that gives resources
// back reads as letting owners go.
//
// Giving back never throws: a driver call that fails parks the resource in
// the ParkingLot, which tries again at the start of the next operation and
// at teardown (destructors run while unwinding from the first error, and a
// give-back is the point of no return of an operation anyway).
#pragma once

#include <cstddef>

#include "common/unique_handle.h"
#include "driver/driver.h"
#include "vmm/parking_lot.h"

namespace tms {

/// `size` bytes of device addresses from `va`.
struct AddressRange {
  DevicePtr va = 0;
  std::size_t size = 0;
  bool operator==(const AddressRange&) const = default;
};

/// Deleters: give the resource back now, or park it (never throw).
struct FreeReservationOrPark {
  ParkingLot* parking = nullptr;
  void operator()(const AddressRange& range) const noexcept {
    parking->free_reservation_or_park(range.va, range.size);
  }
};
struct ReleaseOrPark {
  ParkingLot* parking = nullptr;
  void operator()(PhysicalHandle handle) const noexcept { parking->release_or_park(handle); }
};
struct UnmapOrPark {
  ParkingLot* parking = nullptr;
  void operator()(const AddressRange& range) const noexcept {
    parking->unmap_or_park(range.va, range.size);
  }
};

/// A reserved range of device virtual addresses.
class VaReservation : public UniqueHandle<AddressRange, FreeReservationOrPark> {
 public:
  using UniqueHandle::UniqueHandle;

  /// @throws OutOfMemory, DriverError.
  [[nodiscard]] static VaReservation reserve(Driver& driver, ParkingLot& parking, std::size_t size,
                                             std::size_t alignment);
  [[nodiscard]] static VaReservation adopt(ParkingLot& parking, DevicePtr va,
                                           std::size_t size) noexcept {
    return {AddressRange{va, size}, FreeReservationOrPark{&parking}};
  }

  [[nodiscard]] DevicePtr va() const { return get().va; }
};

/// Physical memory on one device.
class PhysicalMemory : public UniqueHandle<PhysicalHandle, ReleaseOrPark> {
 public:
  using UniqueHandle::UniqueHandle;

  /// @throws OutOfMemory, DriverError.
  [[nodiscard]] static PhysicalMemory create(Driver& driver, ParkingLot& parking, int device,
                                             std::size_t size);
  [[nodiscard]] static PhysicalMemory adopt(ParkingLot& parking, PhysicalHandle handle) noexcept {
    return {handle, ReleaseOrPark{&parking}};
  }

  [[nodiscard]] PhysicalHandle handle() const { return get(); }
};

/// Physical memory mapped into a reserved range.
class Mapping : public UniqueHandle<AddressRange, UnmapOrPark> {
 public:
  using UniqueHandle::UniqueHandle;

  /// Maps `handle` at [va, va+size) and makes it readable and writable by
  /// `device`; a failure leaves nothing mapped. @throws DriverError.
  [[nodiscard]] static Mapping map(Driver& driver, ParkingLot& parking, DevicePtr va,
                                   std::size_t size, PhysicalHandle handle, int device);
  [[nodiscard]] static Mapping adopt(ParkingLot& parking, DevicePtr va, std::size_t size) noexcept {
    return {AddressRange{va, size}, UnmapOrPark{&parking}};
  }
};

}  // namespace tms
