// Every environment variable the library reads, parsed in one place.
// A bad value is a ConfigError naming the variable and the accepted values.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "backup/host_memory_kind.h"
#include "common/log.h"

namespace tms {

enum class DriverKind { kCuda, kSim };

struct EnvConfig {
  bool init_enable = false;               ///< TMS_INIT_ENABLE: threads start inside a region
  bool init_enable_cpu_backup = false;    ///< TMS_INIT_ENABLE_CPU_BACKUP
  bool init_enable_disk_backup = false;   ///< TMS_INIT_ENABLE_DISK_BACKUP
  bool init_cpu_backup_compress = false;  ///< TMS_INIT_CPU_BACKUP_COMPRESS
  HostMemoryKind cpu_backup_backend = HostMemoryKind::kPinned;  ///< TMS_INIT_CPU_BACKUP_BACKEND
  bool retain_cpu_backup = false;                               ///< TMS_RETAIN_CPU_BACKUP
  std::optional<std::string> disk_backup_dir;                   ///< TMS_DISK_BACKUP_DIR
  std::size_t disk_backup_chunk_mb = 16;                        ///< TMS_DISK_BACKUP_CHUNK_MB
  unsigned disk_backup_write_depth = 8;  ///< TMS_DISK_BACKUP_WRITE_DEPTH (writes in flight)
  unsigned disk_backup_read_depth = 8;   ///< TMS_DISK_BACKUP_READ_DEPTH (reads in flight)
  // Tuning of the host backup pipeline (defaults suit an 8+ core host):
  unsigned host_prepare_threads = 0;        ///< TMS_HOST_PREPARE_THREADS (0: min(16, cores))
  std::size_t host_register_chunk_mb = 64;  ///< TMS_HOST_REGISTER_CHUNK_MB
  std::size_t host_small_request_mb =
      64;                                 ///< TMS_HOST_SMALL_REQUEST_MB (smaller ones share blocks)
  std::size_t copy_chunk_mb = 64;         ///< TMS_COPY_CHUNK_MB
  unsigned copy_streams = 2;              ///< TMS_COPY_STREAMS (per device)
  DriverKind driver = DriverKind::kCuda;  ///< TMS_DRIVER: cuda | sim
  LogLevel log_level = LogLevel::kWarning;                ///< TMS_LOG_LEVEL
  int sim_devices = 1;                                    ///< TMS_SIM_DEVICES
  std::size_t sim_capacity_bytes = std::size_t{8} << 30;  ///< TMS_SIM_CAPACITY_MB
};

/// Looks a variable up; returns nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;

/// Parses the TMS_* variables. @throws ConfigError on a bad value.
EnvConfig parse_env_config(const EnvLookup& lookup);
/// parse_env_config over the process environment.
EnvConfig parse_process_env_config();

/// "pinned" | "mmap". @throws InvalidArgument otherwise.
HostMemoryKind parse_host_memory_kind(const std::string& name);
const char* host_memory_kind_name(HostMemoryKind kind);

}  // namespace tms
