#include "vmm/parking_lot.h"

#include <exception>
#include <string>

#include "common/log.h"

namespace tms {
namespace {

// Runs `give_back`; on failure logs and runs `park` (under the lot's lock).
template <typename GiveBack, typename Park>
void attempt(std::mutex& mutex, const char* what, GiveBack&& give_back, Park&& park) noexcept {
  try {
    give_back();
    return;
  } catch (const std::exception& error) {
    log(LogLevel::kWarning,
        std::string("giving back ") + what + " failed, will retry: " + error.what());
  } catch (...) {
    log(LogLevel::kWarning, std::string("giving back ") + what + " failed, will retry");
  }
  try {
    std::lock_guard lock(mutex);
    park();
  } catch (...) {
    log(LogLevel::kError, std::string("could not keep track of ") + what + "; it is leaked");
  }
}

}  // namespace

void ParkingLot::unmap_or_park(DevicePtr va, std::size_t size) noexcept {
  attempt(
      mutex_, "a mapping", [&] { driver_.unmap(va, size); },
      [&] { mappings_.emplace_back(va, size); });
}

void ParkingLot::release_or_park(PhysicalHandle handle) noexcept {
  attempt(
      mutex_, "physical memory", [&] { driver_.release_physical(handle); },
      [&] { handles_.push_back(handle); });
}

void ParkingLot::free_reservation_or_park(DevicePtr va, std::size_t size) noexcept {
  attempt(
      mutex_, "a VA range", [&] { driver_.free_reservation(va, size); },
      [&] { reservations_.emplace_back(va, size); });
}

void ParkingLot::remove_or_park(DiskFile file) noexcept {
  attempt(
      mutex_, "a backup file", [&] { file.remove(); }, [&] { files_.push_back(std::move(file)); });
}

void ParkingLot::retry() noexcept {
  decltype(mappings_) mappings;
  decltype(handles_) handles;
  decltype(reservations_) reservations;
  decltype(files_) files;
  {
    std::lock_guard lock(mutex_);
    mappings.swap(mappings_);
    handles.swap(handles_);
    reservations.swap(reservations_);
    files.swap(files_);
  }
  for (const auto& [va, size] : mappings) unmap_or_park(va, size);
  for (PhysicalHandle handle : handles) release_or_park(handle);
  for (const auto& [va, size] : reservations) free_reservation_or_park(va, size);
  for (DiskFile& file : files) remove_or_park(std::move(file));
}

void ParkingLot::remove_files() noexcept {
  decltype(files_) files;
  {
    std::lock_guard lock(mutex_);
    files.swap(files_);
  }
  for (DiskFile& file : files) remove_or_park(std::move(file));
}

std::size_t ParkingLot::size() const {
  std::lock_guard lock(mutex_);
  return mappings_.size() + handles_.size() + reservations_.size() + files_.size();
}

}  // namespace tms
