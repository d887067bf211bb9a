// The environment, turned into the options the process-wide engine, its
// driver and the log run with: the one place the library reads TMS_*
// variables. Each variable and TMS_CONF key, its default and when to change
// it: docs/configuration.md. A bad value is a ConfigError naming the
// variable (or key) and the accepted values.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "common/log.h"
#include "core/engine.h"
#include "driver/sim_driver.h"

namespace tms {

enum class DriverKind { kCuda, kSim };

struct EnvConfig {
  bool init_enable = false;  ///< TMS_INIT_ENABLE: threads start inside a region
  /// New threads' backup policy: TMS_INIT_ENABLE_CPU_BACKUP,
  /// TMS_INIT_ENABLE_DISK_BACKUP, TMS_INIT_CPU_BACKUP_COMPRESS (both backups,
  /// or compression without the CPU backup, are a ConfigError).
  BackupPolicy init_policy;
  /// Host memory of a CPU backup that names none: TMS_INIT_CPU_BACKUP_BACKEND.
  HostMemoryKind default_host_memory = HostMemoryKind::kPinned;
  bool retain_cpu_backup = false;              ///< TMS_RETAIN_CPU_BACKUP
  std::optional<std::string> disk_backup_dir;  ///< TMS_DISK_BACKUP_DIR
  /// Where disk backups go when TMS_DISK_BACKUP_DIR is unset and nothing
  /// else is set: TMPDIR when it holds an absolute path, else /tmp (backup
  /// files are unnamed, so a shared sticky directory is safe).
  std::string default_disk_backup_dir = "/tmp";
  /// The engine's options: TMS_DISK_BACKUP_CHUNK_MB and the TMS_CONF knobs.
  EngineOptions engine;
  DriverKind driver = DriverKind::kCuda;    ///< TMS_DRIVER: cuda | sim
  SimDriverOptions sim;                     ///< TMS_CONF sim_devices, sim_capacity_mb
  LogLevel log_level = LogLevel::kWarning;  ///< TMS_LOG_LEVEL
  /// Prefix of every log line: "rank N" from torchrun's RANK, else empty.
  std::string log_context;
};

/// Looks a variable up; returns nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;

/// Parses the environment. @throws ConfigError on a bad value, an unknown
/// or malformed TMS_CONF entry, or a variable whose knob moved into TMS_CONF.
EnvConfig parse_env_config(const EnvLookup& lookup);
/// parse_env_config over the process environment.
EnvConfig parse_process_env_config();

/// "pinned" | "mmap". @throws InvalidArgument otherwise.

}  // namespace tms
