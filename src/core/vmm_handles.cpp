#include "core/vmm_handles.h"

#include <exception>
#include <string>

#include "common/log.h"

namespace tms {
namespace {

// Called from destructors during unwinding: report and carry on.
template <typename Fn>
void give_back_quietly(const char* what, Fn&& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& error) {
    log(LogLevel::kError, std::string("could not give back ") + what + ": " + error.what());
  } catch (...) {
    log(LogLevel::kError, std::string("could not give back ") + what);
  }
}

}  // namespace

VaReservation::VaReservation(Driver& driver, std::size_t size, std::size_t alignment)
    : driver_(&driver), va_(driver.reserve(size, alignment)), size_(size) {}

VaReservation& VaReservation::operator=(VaReservation&& other) noexcept {
  std::swap(driver_, other.driver_);
  std::swap(va_, other.va_);
  std::swap(size_, other.size_);
  return *this;
}

VaReservation::~VaReservation() {
  if (va_ != 0)
    give_back_quietly("a VA reservation", [&] { driver_->free_reservation(va_, size_); });
}

PhysicalMemory::PhysicalMemory(Driver& driver, int device, std::size_t size)
    : driver_(&driver), handle_(driver.create_physical(device, size)) {}

PhysicalMemory& PhysicalMemory::operator=(PhysicalMemory&& other) noexcept {
  std::swap(driver_, other.driver_);
  std::swap(handle_, other.handle_);
  return *this;
}

PhysicalMemory::~PhysicalMemory() {
  if (handle_ != 0)
    give_back_quietly("physical memory", [&] { driver_->release_physical(handle_); });
}

Mapping::Mapping(Driver& driver, DevicePtr va, std::size_t size, PhysicalHandle handle, int device)
    : driver_(&driver), size_(size) {
  driver.map(va, size, handle);
  try {
    driver.set_access(va, size, device);
  } catch (...) {
    // A throwing constructor runs no destructor: undo the map here.
    give_back_quietly("a mapping", [&] { driver.unmap(va, size); });
    throw;
  }
  va_ = va;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  std::swap(driver_, other.driver_);
  std::swap(va_, other.va_);
  std::swap(size_, other.size_);
  return *this;
}

Mapping::~Mapping() {
  if (va_ != 0) give_back_quietly("a mapping", [&] { driver_->unmap(va_, size_); });
}

}  // namespace tms
