// The process-wide state behind the C ABI: the configuration, the driver
// chosen by TMS_DRIVER, the engine, and each thread's region settings.
#pragma once

#include <string>

#include "capi/thread_state.h"
#include "config/env_config.h"
#include "core/engine.h"
#include "driver/driver.h"

namespace tms {

class FaultInjectingDriver;
class SimDriver;

struct Runtime {
  EnvConfig config;
  /// The driver the engine runs on: the one TMS_DRIVER chose, wrapped in
  /// `faults`, so that tms_sim_fail_call works on every driver.
  Driver* driver = nullptr;
  FaultInjectingDriver* faults = nullptr;
  Engine* engine = nullptr;
  /// Non-null only when the chosen driver is the simulation (tests poke it).
  SimDriver* sim = nullptr;
};

/// Creates the runtime on first use. Never destroyed: tearing the engine
/// down during static destruction races the CUDA driver's own teardown at
/// exit, so the process exit returns everything instead.
/// @throws ConfigError, DriverUnavailable (TMS_DRIVER=cuda without a
/// loadable libcuda), InvalidState (in a fork()ed child of a process that
/// had used the library, and once exit cleanup started). A failed creation
/// is retried on the next call.
Runtime& runtime();

/// The runtime if some call already created it, else nullptr. Never
/// creates it and takes no lock: the interposers use this to leave foreign
/// pointers alone.
Runtime* runtime_if_created() noexcept;

/// Whether this process is a fork()ed child of a process that had used the
/// library; every call is refused there. Takes no lock: the parent's other
/// threads may have held any lock at the fork.
bool in_forked_child() noexcept;
/// Why every call that needs the engine is refused in a fork()ed child.
extern const char* const kForkedChildMessage;

/// The configuration from the environment, without creating the engine.
/// @throws ConfigError.
const EnvConfig& env_config();

}  // namespace tms
