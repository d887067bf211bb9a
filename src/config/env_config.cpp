#include "config/env_config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "common/errors.h"

namespace tms {
namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

[[noreturn]] void reject(const char* variable, const std::string& value, const char* accepted) {
  throw ConfigError(std::string("environment variable ") + variable + "='" + value +
                    "' is not valid; accepted values: " + accepted);
}

bool parse_bool(const char* variable, const char* raw, bool fallback) {
  if (raw == nullptr || *raw == '\0') return fallback;
  const std::string value = lowercase(raw);
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off") return false;
  reject(variable, raw, "1/0, true/false, yes/no, on/off");
}

std::size_t parse_positive(const char* variable, const char* raw, std::size_t fallback,
                           std::size_t limit) {
  if (raw == nullptr || *raw == '\0') return fallback;
  errno = 0;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(raw, &end, 10);
  if (errno != 0 || end == raw || *end != '\0' || value == 0 || value > limit || raw[0] == '-') {
    reject(variable, raw, ("a whole number from 1 to " + std::to_string(limit)).c_str());
  }
  return static_cast<std::size_t>(value);
}

}  // namespace

HostMemoryKind parse_host_memory_kind(const std::string& name) {
  const std::string value = lowercase(name);
  if (value == "pinned") return HostMemoryKind::kPinned;
  if (value == "mmap") return HostMemoryKind::kMmap;
  throw InvalidArgument("unknown CPU backup backend '" + name + "'; accepted: pinned, mmap");
}

const char* host_memory_kind_name(HostMemoryKind kind) {
  return kind == HostMemoryKind::kPinned ? "pinned" : "mmap";
}

EnvConfig parse_env_config(const EnvLookup& lookup) {
  EnvConfig config;
  config.init_enable = parse_bool("TMS_INIT_ENABLE", lookup("TMS_INIT_ENABLE"), false);
  config.init_cpu_backup_compress =
      parse_bool("TMS_INIT_CPU_BACKUP_COMPRESS", lookup("TMS_INIT_CPU_BACKUP_COMPRESS"), false);
  config.init_enable_cpu_backup =
      parse_bool("TMS_INIT_ENABLE_CPU_BACKUP", lookup("TMS_INIT_ENABLE_CPU_BACKUP"), false);
  config.init_enable_disk_backup =
      parse_bool("TMS_INIT_ENABLE_DISK_BACKUP", lookup("TMS_INIT_ENABLE_DISK_BACKUP"), false);
  config.retain_cpu_backup =
      parse_bool("TMS_RETAIN_CPU_BACKUP", lookup("TMS_RETAIN_CPU_BACKUP"), false);

  if (const char* raw = lookup("TMS_INIT_CPU_BACKUP_BACKEND"); raw != nullptr && *raw != '\0') {
    try {
      config.cpu_backup_backend = parse_host_memory_kind(raw);
    } catch (const InvalidArgument&) {
      reject("TMS_INIT_CPU_BACKUP_BACKEND", raw, "pinned, mmap");
    }
  }
  if (const char* raw = lookup("TMS_DISK_BACKUP_DIR"); raw != nullptr && *raw != '\0') {
    config.disk_backup_dir = raw;
  }
  if (config.init_enable_disk_backup && !config.disk_backup_dir) {
    // Every thread would start with disk backup on and nowhere to write it.
    throw ConfigError(
        "TMS_INIT_ENABLE_DISK_BACKUP is on but TMS_DISK_BACKUP_DIR is not set; set it to the "
        "directory for backup files");
  }
  config.disk_backup_chunk_mb =
      parse_positive("TMS_DISK_BACKUP_CHUNK_MB", lookup("TMS_DISK_BACKUP_CHUNK_MB"), 16, 65536);
  config.disk_backup_write_depth = static_cast<unsigned>(
      parse_positive("TMS_DISK_BACKUP_WRITE_DEPTH", lookup("TMS_DISK_BACKUP_WRITE_DEPTH"), 8, 16));
  config.disk_backup_read_depth = static_cast<unsigned>(
      parse_positive("TMS_DISK_BACKUP_READ_DEPTH", lookup("TMS_DISK_BACKUP_READ_DEPTH"), 8, 16));
  config.host_prepare_threads = static_cast<unsigned>(
      parse_positive("TMS_HOST_PREPARE_THREADS", lookup("TMS_HOST_PREPARE_THREADS"), 0, 256));
  config.host_register_chunk_mb =
      parse_positive("TMS_HOST_REGISTER_CHUNK_MB", lookup("TMS_HOST_REGISTER_CHUNK_MB"), 64, 65536);
  config.host_small_request_mb =
      parse_positive("TMS_HOST_SMALL_REQUEST_MB", lookup("TMS_HOST_SMALL_REQUEST_MB"), 64, 65536);
  config.copy_chunk_mb =
      parse_positive("TMS_COPY_CHUNK_MB", lookup("TMS_COPY_CHUNK_MB"), 64, 65536);
  config.copy_streams =
      static_cast<unsigned>(parse_positive("TMS_COPY_STREAMS", lookup("TMS_COPY_STREAMS"), 2, 16));

  if (const char* raw = lookup("TMS_DRIVER"); raw != nullptr && *raw != '\0') {
    const std::string value = lowercase(raw);
    if (value == "cuda") {
      config.driver = DriverKind::kCuda;
    } else if (value == "sim") {
      config.driver = DriverKind::kSim;
    } else {
      reject("TMS_DRIVER", raw, "cuda, sim");
    }
  }
  if (const char* raw = lookup("TMS_LOG_LEVEL"); raw != nullptr && *raw != '\0') {
    const std::string value = lowercase(raw);
    if (value == "error") {
      config.log_level = LogLevel::kError;
    } else if (value == "warning") {
      config.log_level = LogLevel::kWarning;
    } else if (value == "info") {
      config.log_level = LogLevel::kInfo;
    } else if (value == "debug") {
      config.log_level = LogLevel::kDebug;
    } else {
      reject("TMS_LOG_LEVEL", raw, "error, warning, info, debug");
    }
  }
  config.sim_devices =
      static_cast<int>(parse_positive("TMS_SIM_DEVICES", lookup("TMS_SIM_DEVICES"), 1, 64));
  config.sim_capacity_bytes = parse_positive("TMS_SIM_CAPACITY_MB", lookup("TMS_SIM_CAPACITY_MB"),
                                             8192, std::size_t{1} << 24)
                              << 20;
  return config;
}

EnvConfig parse_process_env_config() {
  return parse_env_config([](const char* name) { return std::getenv(name); });
}

}  // namespace tms
