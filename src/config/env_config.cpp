#include "config/env_config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "common/errors.h"
#include "config/conf_pairs.h"

namespace tms {
namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

/// `setting` is a variable's name, or "TMS_CONF: key" for a TMS_CONF knob.
[[noreturn]] void reject(const std::string& setting, const std::string& value,
                         const std::string& accepted) {
  throw ConfigError("environment variable " + setting + "='" + value +
                    "' is not valid; accepted values: " + accepted);
}

bool parse_bool(const char* variable, const char* raw, bool fallback) {
  if (raw == nullptr || *raw == '\0') return fallback;
  const std::string value = lowercase(raw);
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off") return false;
  reject(variable, raw, "1/0, true/false, yes/no, on/off");
}

/// A whole number from `min` to `max`; `fallback` when unset or empty.
std::size_t parse_whole(const std::string& setting, const char* raw, std::size_t fallback,
                        std::size_t min, std::size_t max) {
  if (raw == nullptr || *raw == '\0') return fallback;
  errno = 0;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(raw, &end, 10);
  if (errno != 0 || end == raw || *end != '\0' || raw[0] == '-' || value < min || value > max) {
    reject(setting, raw,
           "a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return static_cast<std::size_t>(value);
}

/// A tuning knob of TMS_CONF: its key, the range of its value, where the
/// value goes, and the variable it was read from before TMS_CONF existed.
struct Knob {
  const char* key;
  std::size_t min;
  std::size_t max;
  void (*apply)(EnvConfig& config, std::size_t value);
  const char* old_variable;
};

constexpr std::size_t kMiB = std::size_t{1} << 20;

// docs/configuration.md describes each of these.
constexpr Knob kKnobs[] = {
    {"host_prepare_threads", 1, 256,
     [](EnvConfig& c, std::size_t v) { c.engine.host.prepare_threads = static_cast<unsigned>(v); },
     "TMS_HOST_PREPARE_THREADS"},
    {"host_register_chunk_mb", 1, 65536,
     [](EnvConfig& c, std::size_t v) { c.engine.host.register_chunk_bytes = v * kMiB; },
     "TMS_HOST_REGISTER_CHUNK_MB"},
    {"host_small_request_mb", 1, 65536,
     [](EnvConfig& c, std::size_t v) { c.engine.host.small_request_bytes = v * kMiB; },
     "TMS_HOST_SMALL_REQUEST_MB"},
    {"copy_chunk_mb", 1, 65536,
     [](EnvConfig& c, std::size_t v) { c.engine.copies.chunk_bytes = v * kMiB; },
     "TMS_COPY_CHUNK_MB"},
    {"copy_streams", 1, 16,
     [](EnvConfig& c, std::size_t v) { c.engine.copies.streams_per_device = v; },
     "TMS_COPY_STREAMS"},
    {"disk_backup_write_depth", 1, 16,
     [](EnvConfig& c, std::size_t v) { c.engine.disk.write_depth = v; },
     "TMS_DISK_BACKUP_WRITE_DEPTH"},
    {"disk_backup_read_depth", 1, 16,
     [](EnvConfig& c, std::size_t v) { c.engine.disk.read_depth = v; },
     "TMS_DISK_BACKUP_READ_DEPTH"},
    {"sim_devices", 1, 64,
     [](EnvConfig& c, std::size_t v) { c.sim.device_count = static_cast<int>(v); },
     "TMS_SIM_DEVICES"},
    {"sim_capacity_mb", 1, std::size_t{1} << 24,
     [](EnvConfig& c, std::size_t v) { c.sim.capacity_bytes = v * kMiB; }, "TMS_SIM_CAPACITY_MB"},
};

constexpr const char* kConfVariable = "TMS_CONF";

std::string knob_keys() {
  std::string keys;
  for (const Knob& knob : kKnobs) keys += (keys.empty() ? "" : ", ") + std::string(knob.key);
  return keys;
}

/// Applies TMS_CONF to `config`. A variable a knob was read from before is
/// refused rather than ignored: a tuned job must not silently lose its tuning.
void apply_knobs(const EnvLookup& lookup, EnvConfig& config) {
  for (const Knob& knob : kKnobs) {
    const char* raw = lookup(knob.old_variable);
    if (raw == nullptr || *raw == '\0') continue;
    throw ConfigError(std::string("environment variable ") + knob.old_variable +
                      " is no longer read; its setting moved into " + kConfVariable + ": set " +
                      kConfVariable + "=" + knob.key + "=" + raw +
                      " instead (several settings: comma-separated; docs/configuration.md)");
  }
  const char* text = lookup(kConfVariable);
  if (text == nullptr) return;
  for (const ConfPair& pair : split_conf_pairs(kConfVariable, text)) {
    const Knob* knob = nullptr;
    for (const Knob& candidate : kKnobs) {
      if (pair.key == candidate.key) knob = &candidate;
    }
    if (knob == nullptr) {
      throw ConfigError(std::string("environment variable ") + kConfVariable + ": unknown key '" +
                        pair.key + "'; accepted keys: " + knob_keys() + " (docs/configuration.md)");
    }
    const std::string setting = std::string(kConfVariable) + ": " + knob->key;
    knob->apply(config, parse_whole(setting, pair.value.c_str(), 0, knob->min, knob->max));
  }
}

// The policy TMS_INIT_* give new threads; refuses what region() refuses.
BackupPolicy initial_policy(bool cpu_backup, bool disk_backup, bool compress,
                            HostMemoryKind host_memory) {
  if (cpu_backup && disk_backup) {
    throw ConfigError(
        "TMS_INIT_ENABLE_CPU_BACKUP and TMS_INIT_ENABLE_DISK_BACKUP are both on; a paused "
        "allocation keeps one backup: set one of them to 0");
  }
  if (compress && !cpu_backup) {
    throw ConfigError(
        "TMS_INIT_CPU_BACKUP_COMPRESS=1 compresses the CPU backup: it needs "
        "TMS_INIT_ENABLE_CPU_BACKUP=1");
  }
  if (disk_backup) return {BackupKind::kDisk, HostMemoryKind::kPinned};
  if (!cpu_backup) return {};
  return {compress ? BackupKind::kHostCompressed : BackupKind::kHost, host_memory};
}

}  // namespace

EnvConfig parse_env_config(const EnvLookup& lookup) {
  EnvConfig config;
  config.init_enable = parse_bool("TMS_INIT_ENABLE", lookup("TMS_INIT_ENABLE"), false);
  const bool compress =
      parse_bool("TMS_INIT_CPU_BACKUP_COMPRESS", lookup("TMS_INIT_CPU_BACKUP_COMPRESS"), false);
  const bool cpu_backup =
      parse_bool("TMS_INIT_ENABLE_CPU_BACKUP", lookup("TMS_INIT_ENABLE_CPU_BACKUP"), false);
  const bool disk_backup =
      parse_bool("TMS_INIT_ENABLE_DISK_BACKUP", lookup("TMS_INIT_ENABLE_DISK_BACKUP"), false);
  config.retain_cpu_backup =
      parse_bool("TMS_RETAIN_CPU_BACKUP", lookup("TMS_RETAIN_CPU_BACKUP"), false);

  if (const char* raw = lookup("TMS_INIT_CPU_BACKUP_BACKEND"); raw != nullptr && *raw != '\0') {
    try {
      config.default_host_memory = parse_host_memory_kind(raw);
    } catch (const InvalidArgument&) {
      reject("TMS_INIT_CPU_BACKUP_BACKEND", raw, "pinned, mmap");
    }
  }
  config.init_policy =
      initial_policy(cpu_backup, disk_backup, compress, config.default_host_memory);
  if (const char* raw = lookup("TMS_DISK_BACKUP_DIR"); raw != nullptr && *raw != '\0') {
    config.disk_backup_dir = raw;
  }
  if (const char* raw = lookup("TMPDIR"); raw != nullptr && raw[0] == '/') {
    config.default_disk_backup_dir = raw;
  }
  // 0 means the default, as in the library this one replaces.
  constexpr std::size_t kDefaultChunkMb = 16;
  const std::size_t chunk_mb = parse_whole(
      "TMS_DISK_BACKUP_CHUNK_MB", lookup("TMS_DISK_BACKUP_CHUNK_MB"), kDefaultChunkMb, 0, 65536);
  config.engine.disk.chunk_bytes = (chunk_mb == 0 ? kDefaultChunkMb : chunk_mb) << 20;

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
  // torchrun's rank in every log line: many processes often share one log.
  if (const char* rank = lookup("RANK"); rank != nullptr && *rank != '\0') {
    config.log_context = std::string("rank ") + rank;
  }

  // The process-wide engine's own choices, before the knobs may change them.
  // Unregistering and unmapping host backups after resume is slow; do it
  // off the caller's path.
  config.engine.host.background_release = true;
  config.sim.capacity_bytes = std::size_t{8} << 30;
  apply_knobs(lookup, config);
  return config;
}

EnvConfig parse_process_env_config() {
  return parse_env_config([](const char* name) { return std::getenv(name); });
}

}  // namespace tms
