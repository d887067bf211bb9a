#include "core/registry.h"

#include <utility>

namespace tms {

void Registry::insert(std::unique_ptr<Allocation> allocation) {
  const DevicePtr base = allocation->base;
  allocations_.emplace(base, std::move(allocation));
}

std::unique_ptr<Allocation> Registry::remove(DevicePtr base) {
  auto it = allocations_.find(base);
  if (it == allocations_.end()) return nullptr;
  std::unique_ptr<Allocation> allocation = std::move(it->second);
  allocations_.erase(it);
  return allocation;
}

Allocation* Registry::find_containing(DevicePtr ptr) const {
  // The last allocation starting at or before ptr is the only candidate.
  auto it = allocations_.upper_bound(ptr);
  if (it == allocations_.begin()) return nullptr;
  --it;
  return it->second->contains(ptr) ? it->second.get() : nullptr;
}

}  // namespace tms
