// Owners over what one allocation record holds on the device, for the
// operations that take a record apart (vmm/vmm_handles.h has the owners
// themselves).
//
//  - DeviceResources: free() and engine teardown adopt a record's VA range,
//    physical memory and mapping and let them go, in the one right order,
//    parking what the driver refuses.
//  - Unmapping: pause's unmap of one record, the mirror of resume's Mapping.
//    A Mapping unmaps again unless resume commits; an Unmapping maps again
//    unless pause commits (the physical memory is still alive then, so the
//    contents come back). Mapping back is an undo, not a give-back that can
//    wait in the ParkingLot: when it fails, the record becomes kBroken
//    (AllocationState) instead of claiming to be active over an unusable
//    range, and the pause's error counts it.
#pragma once

#include <cstddef>
#include <mutex>

#include "common/unique_handle.h"
#include "core/allocation.h"
#include "driver/driver.h"
#include "vmm/parking_lot.h"
#include "vmm/vmm_handles.h"

namespace tms {

/// What one allocation holds on the device, in owners. Given back (or
/// destroyed) it unmaps, releases the physical memory and frees the VA
/// range, in that order (members go in reverse order of declaration).
struct DeviceResources {
  VaReservation reservation;
  PhysicalMemory physical;
  Mapping mapping;

  void give_back() noexcept {
    mapping.reset();
    physical.reset();
    reservation.reset();
  }
};

/// Adopts what `allocation` holds: its range, its physical memory unless it
/// is paused (a paused record has none), and its mapping when `mapped`.
[[nodiscard]] DeviceResources adopt_device_resources(ParkingLot& parking,
                                                     const Allocation& allocation,
                                                     bool mapped) noexcept;

/// Deleter of an Unmapping: maps the range back onto the record's physical
/// memory and grants access again; when that fails, logs, marks the record
/// kBroken (range_mapped says whether the map itself worked) under the
/// registry mutex and counts it in `*broken`.
struct MapBackOrBreak {
  Driver* driver = nullptr;
  std::mutex* registry_mutex = nullptr;  ///< guards the record's fields
  std::size_t* broken = nullptr;
  void operator()(Allocation* allocation) const noexcept;
};

/// A record's range, unmapped by pause until it commits (release()).
class Unmapping : public UniqueHandle<Allocation*, MapBackOrBreak> {
 public:
  using UniqueHandle::UniqueHandle;

  /// Unmaps `allocation`'s range; its physical memory stays.
  /// @throws DriverError; the range is still mapped then.
  [[nodiscard]] static Unmapping unmap(Allocation& allocation, MapBackOrBreak map_back);
};

}  // namespace tms
