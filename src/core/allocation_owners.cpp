#include "core/allocation_owners.h"

#include <exception>
#include <string>

#include "common/errors.h"
#include "common/log.h"

namespace tms {

DeviceResources adopt_device_resources(ParkingLot& parking, const Allocation& allocation,
                                       bool mapped) noexcept {
  DeviceResources adopted;
  adopted.reservation = VaReservation::adopt(parking, allocation.base, allocation.size);
  if (allocation.state != AllocationState::kPaused) {
    adopted.physical = PhysicalMemory::adopt(parking, allocation.handle);
  }
  if (mapped) adopted.mapping = Mapping::adopt(parking, allocation.base, allocation.size);
  return adopted;
}

void MapBackOrBreak::operator()(Allocation* allocation) const noexcept {
  bool mapped = false;
  try {
    driver->map(allocation->base, allocation->size, allocation->handle);
    mapped = true;
    driver->set_access(allocation->base, allocation->size, allocation->device);
    return;
  } catch (const std::exception& error) {
    log(LogLevel::kError, "pause rollback could not map the allocation at " +
                              hex_address(allocation->base) + " again; it is unusable " +
                              "until a later operation maps it: " + error.what());
  }
  std::lock_guard lock(*registry_mutex);
  allocation->state = AllocationState::kBroken;
  allocation->range_mapped = mapped;
  ++*broken;
}

Unmapping Unmapping::unmap(Allocation& allocation, MapBackOrBreak map_back) {
  map_back.driver->unmap(allocation.base, allocation.size);
  return {&allocation, map_back};
}

}  // namespace tms
