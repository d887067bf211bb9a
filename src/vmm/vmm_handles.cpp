#include "vmm/vmm_handles.h"

namespace tms {

VaReservation VaReservation::reserve(Driver& driver, ParkingLot& parking, std::size_t size,
                                     std::size_t alignment) {
  return adopt(parking, driver.reserve(size, alignment), size);
}

PhysicalMemory PhysicalMemory::create(Driver& driver, ParkingLot& parking, int device,
                                      std::size_t size) {
  return adopt(parking, driver.create_physical(device, size));
}

Mapping Mapping::map(Driver& driver, ParkingLot& parking, DevicePtr va, std::size_t size,
                     PhysicalHandle handle, int device) {
  driver.map(va, size, handle);
  Mapping mapping = adopt(parking, va, size);
  driver.set_access(va, size, device);  // if this throws, `mapping` unmaps again
  return mapping;
}

}  // namespace tms
