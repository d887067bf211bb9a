// The simulated driver behind the fault injector, as the runtime runs it:
// the engine takes a FaultySim as its Driver, tests schedule failures on it
// (FaultInjectingDriver's controls) and read the simulation's accounting
// through it, under the names SimDriver gives them.
#pragma once

#include <cstddef>
#include <vector>

#include "driver/fault_injecting_driver.h"
#include "driver/sim_driver.h"
#include "test_support.h"

namespace tms::testing {

namespace detail {
/// Constructed before FaultInjectingDriver, which keeps a reference to it.
struct SimHolder {
  explicit SimHolder(SimDriverOptions options) : held(options) {}
  SimDriver held;
};
}  // namespace detail

class FaultySim : private detail::SimHolder, public FaultInjectingDriver {
 public:
  explicit FaultySim(SimDriverOptions options = {})
      : SimHolder(options), FaultInjectingDriver(held) {}

  [[nodiscard]] SimDriver& simulation() { return held; }
  [[nodiscard]] const SimDriver& simulation() const { return held; }

  // SimDriver's accounting and controls.
  [[nodiscard]] std::size_t physical_bytes(int device) const { return held.physical_bytes(device); }
  [[nodiscard]] std::vector<std::size_t> physical_bytes_per_device() const {
    return held.physical_bytes_per_device();
  }
  [[nodiscard]] std::size_t reserved_bytes() const { return held.reserved_bytes(); }
  [[nodiscard]] std::size_t mapped_bytes() const { return held.mapped_bytes(); }
  [[nodiscard]] std::size_t accessible_bytes() const { return held.accessible_bytes(); }
  [[nodiscard]] std::size_t host_bytes() const { return held.host_bytes(); }
  [[nodiscard]] std::size_t live_streams() const { return held.live_streams(); }
  [[nodiscard]] std::size_t registered_host_ranges() const { return held.registered_host_ranges(); }
  void set_capacity(std::size_t bytes_per_device) { held.set_capacity(bytes_per_device); }
  void set_current_device(int device) { held.set_current_device(device); }
  void set_capturing(int device, bool capturing) { held.set_capturing(device, capturing); }
};

inline SimSnapshot snapshot(const FaultySim& sim) { return snapshot(sim.simulation()); }

}  // namespace tms::testing
