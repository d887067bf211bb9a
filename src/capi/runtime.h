// The process-wide state behind the C ABI: the configuration, the driver
// chosen by TMS_DRIVER, the engine, and each thread's region settings.
#pragma once

#include <string>

#include "config/env_config.h"
#include "core/engine.h"
#include "driver/driver.h"

namespace tms {

class SimDriver;

/// Settings that apply to the allocations the calling thread makes.
struct ThreadRegion {
  bool interesting = false;  ///< allocations go to the engine
  std::string tag = "default";
  bool cpu_backup = false;
  HostMemoryKind cpu_backup_backend = HostMemoryKind::kPinned;
  bool disk_backup = false;
  bool compress = false;  ///< compress the CPU backup (bf16/fp16 weights)
};

/// The calling thread's settings; a thread starts with the defaults from the
/// TMS_INIT_* variables. Cheap: called on every interposed cudaMalloc.
ThreadRegion& thread_region();

struct Runtime {
  EnvConfig config;
  Driver* driver = nullptr;
  Engine* engine = nullptr;
  /// Non-null only when driver is the simulation (tests poke it).
  SimDriver* sim = nullptr;
};

/// Creates the runtime on first use. Never destroyed: tearing the engine
/// down during static destruction races the CUDA driver's own teardown at
/// exit, so the process exit returns everything instead.
/// @throws ConfigError, DriverUnavailable, InvalidState (used in a fork()ed
/// child of a process that had already initialized the library). A failed
/// creation is retried on the next call.
Runtime& runtime();

/// The runtime if some call already created it, else nullptr. Never
/// creates it: the interposers use this to leave foreign pointers alone.
Runtime* runtime_if_created();

/// The configuration from the environment, without creating the engine.
/// @throws ConfigError.
const EnvConfig& env_config();

}  // namespace tms
