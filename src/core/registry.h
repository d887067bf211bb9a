// Allocations keyed by base address, with O(log n) lookup of the allocation
// that contains an interior pointer. Not thread-safe: the engine guards it.
#pragma once

#include <map>
#include <memory>

#include "core/allocation.h"

namespace tms {

class Registry {
 public:
  using Map = std::map<DevicePtr, std::unique_ptr<Allocation>>;

  void insert(std::unique_ptr<Allocation> allocation);
  /// Removes and returns the allocation based at `base` (nullptr if none).
  std::unique_ptr<Allocation> remove(DevicePtr base);
  /// The allocation whose [base, base+size) holds `ptr`, or nullptr.
  [[nodiscard]] Allocation* find_containing(DevicePtr ptr) const;

  [[nodiscard]] const Map& all() const { return allocations_; }
  [[nodiscard]] bool empty() const { return allocations_.empty(); }

 private:
  Map allocations_;
};

}  // namespace tms
