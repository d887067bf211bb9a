#include "config/env_config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>

#include "common/errors.h"

namespace tms {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

EnvConfig parse(const std::map<std::string, std::string>& env) {
  return parse_env_config([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(EnvConfig, DefaultsWhenNothingIsSet) {
  const EnvConfig config = parse({});
  EXPECT_FALSE(config.init_enable);
  EXPECT_EQ(config.init_policy, BackupPolicy{});
  EXPECT_EQ(config.default_host_memory, HostMemoryKind::kPinned);
  EXPECT_EQ(config.driver, DriverKind::kCuda);
  EXPECT_FALSE(config.disk_backup_dir.has_value());
  EXPECT_TRUE(config.log_context.empty());
  // The engine's own defaults, except what the process-wide engine changes.
  const EngineOptions defaults;
  EXPECT_EQ(config.engine.disk.chunk_bytes, 16 * kMiB);
  EXPECT_EQ(config.engine.disk.write_depth, defaults.disk.write_depth);
  EXPECT_EQ(config.engine.disk.read_depth, defaults.disk.read_depth);
  EXPECT_EQ(config.engine.host.prepare_threads, 0u) << "0: the engine picks from the core count";
  EXPECT_EQ(config.engine.host.register_chunk_bytes, defaults.host.register_chunk_bytes);
  EXPECT_EQ(config.engine.host.small_request_bytes, defaults.host.small_request_bytes);
  EXPECT_EQ(config.engine.copies.chunk_bytes, defaults.copies.chunk_bytes);
  EXPECT_EQ(config.engine.copies.streams_per_device, defaults.copies.streams_per_device);
  EXPECT_TRUE(config.engine.host.background_release) << "released off the caller's path";
  EXPECT_EQ(config.engine.file_io, nullptr);
  EXPECT_EQ(config.sim.device_count, 1);
  EXPECT_EQ(config.sim.capacity_bytes, 8192 * kMiB);
}

TEST(EnvConfig, ReadsEveryVariableAndEveryConfKey) {
  const EnvConfig config = parse({{"TMS_INIT_ENABLE", "1"},
                                  {"TMS_INIT_ENABLE_CPU_BACKUP", "true"},
                                  {"TMS_INIT_ENABLE_DISK_BACKUP", "0"},
                                  {"TMS_INIT_CPU_BACKUP_COMPRESS", "on"},
                                  {"TMS_INIT_CPU_BACKUP_BACKEND", "MMAP"},
                                  {"TMS_RETAIN_CPU_BACKUP", "yes"},
                                  {"TMS_DISK_BACKUP_DIR", "/tmp/backups"},
                                  {"TMS_DISK_BACKUP_CHUNK_MB", "128"},
                                  {"TMS_DRIVER", "sim"},
                                  {"TMS_LOG_LEVEL", "debug"},
                                  {"RANK", "3"},
                                  {"TMS_CONF",
                                   "disk_backup_write_depth=6,disk_backup_read_depth=3,"
                                   "sim_devices=4,sim_capacity_mb=100,host_prepare_threads=12,"
                                   "host_register_chunk_mb=256, copy_chunk_mb=32,"
                                   "host_small_request_mb=8,copy_streams=4"}});
  EXPECT_TRUE(config.init_enable);
  EXPECT_EQ(config.init_policy, (BackupPolicy{BackupKind::kHostCompressed, HostMemoryKind::kMmap}));
  EXPECT_EQ(config.default_host_memory, HostMemoryKind::kMmap);
  EXPECT_TRUE(config.retain_cpu_backup);
  EXPECT_EQ(config.disk_backup_dir, "/tmp/backups");
  EXPECT_EQ(config.engine.disk.chunk_bytes, 128 * kMiB);
  EXPECT_EQ(config.engine.disk.write_depth, 6u);
  EXPECT_EQ(config.engine.disk.read_depth, 3u);
  EXPECT_EQ(config.driver, DriverKind::kSim);
  EXPECT_EQ(config.log_level, LogLevel::kDebug);
  EXPECT_EQ(config.log_context, "rank 3");
  EXPECT_EQ(config.sim.device_count, 4);
  EXPECT_EQ(config.sim.capacity_bytes, 100 * kMiB);
  EXPECT_EQ(config.engine.host.prepare_threads, 12u);
  EXPECT_EQ(config.engine.host.register_chunk_bytes, 256 * kMiB);
  EXPECT_EQ(config.engine.host.small_request_bytes, 8 * kMiB);
  EXPECT_EQ(config.engine.copies.chunk_bytes, 32 * kMiB);
  EXPECT_EQ(config.engine.copies.streams_per_device, 4u);
}

/// The message of the ConfigError `env` raises; fails the test if none.
std::string config_error(const std::map<std::string, std::string>& env) {
  try {
    (void)parse(env);
  } catch (const ConfigError& error) {
    return error.what();
  }
  ADD_FAILURE() << "accepted " << env.begin()->first << "=" << env.begin()->second;
  return {};
}

TEST(EnvConfig, BadValuesNameTheVariableAndTheAcceptedValues) {
  const std::pair<std::map<std::string, std::string>, std::string> bad[] = {
      {{{"TMS_INIT_ENABLE", "maybe"}}, "TMS_INIT_ENABLE"},
      {{{"TMS_INIT_CPU_BACKUP_BACKEND", "cuda"}}, "TMS_INIT_CPU_BACKUP_BACKEND"},
      {{{"TMS_DISK_BACKUP_CHUNK_MB", "-5"}}, "TMS_DISK_BACKUP_CHUNK_MB"},
      {{{"TMS_DISK_BACKUP_CHUNK_MB", "12abc"}}, "TMS_DISK_BACKUP_CHUNK_MB"},
      {{{"TMS_DRIVER", "hip"}}, "TMS_DRIVER"},
      {{{"TMS_LOG_LEVEL", "loud"}}, "TMS_LOG_LEVEL"},
      {{{"TMS_CONF", "disk_backup_write_depth=0"}}, "disk_backup_write_depth"},
      {{{"TMS_CONF", "disk_backup_read_depth=17"}}, "disk_backup_read_depth"},
      {{{"TMS_CONF", "host_prepare_threads=0"}}, "host_prepare_threads"},
      {{{"TMS_CONF", "copy_streams=17"}}, "copy_streams"},
      {{{"TMS_CONF", "copy_chunk_mb=x"}}, "copy_chunk_mb"},
      {{{"TMS_CONF", "copy_streams=2,host_register_chunk_mb=-1"}}, "host_register_chunk_mb"},
      {{{"TMS_CONF", "sim_capacity_mb=99999999999"}}, "sim_capacity_mb"},
  };
  for (const auto& [env, named] : bad) {
    const std::string message = config_error(env);
    EXPECT_NE(message.find(named), std::string::npos) << message;
    EXPECT_NE(message.find("accepted values"), std::string::npos) << message;
  }
}

TEST(EnvConfig, UnknownOrMalformedConfEntriesAreErrors) {
  std::string message = config_error({{"TMS_CONF", "copy_chunk_mb=32,turbo=1"}});
  EXPECT_NE(message.find("TMS_CONF"), std::string::npos) << message;
  EXPECT_NE(message.find("'turbo'"), std::string::npos) << message;
  EXPECT_NE(message.find("copy_streams"), std::string::npos) << "lists the keys: " << message;
  message = config_error({{"TMS_CONF", "copy_chunk_mb"}});
  EXPECT_NE(message.find("'copy_chunk_mb'"), std::string::npos) << message;
  message = config_error({{"TMS_CONF", "copy_streams=2,copy_streams=4"}});
  EXPECT_NE(message.find("copy_streams=4"), std::string::npos) << message;
  message = config_error({{"TMS_CONF", "COPY_STREAMS=2"}});
  EXPECT_NE(message.find("'COPY_STREAMS'"), std::string::npos) << "keys are lowercase: " << message;
}

// A tuned job must not silently lose its tuning when it upgrades.
TEST(EnvConfig, AVariableWhoseKnobMovedIntoConfIsAnErrorNamingItsNewSpelling) {
  const std::pair<const char*, const char*> moved[] = {
      {"TMS_HOST_PREPARE_THREADS", "host_prepare_threads"},
      {"TMS_HOST_REGISTER_CHUNK_MB", "host_register_chunk_mb"},
      {"TMS_HOST_SMALL_REQUEST_MB", "host_small_request_mb"},
      {"TMS_COPY_CHUNK_MB", "copy_chunk_mb"},
      {"TMS_COPY_STREAMS", "copy_streams"},
      {"TMS_DISK_BACKUP_WRITE_DEPTH", "disk_backup_write_depth"},
      {"TMS_DISK_BACKUP_READ_DEPTH", "disk_backup_read_depth"},
      {"TMS_SIM_DEVICES", "sim_devices"},
      {"TMS_SIM_CAPACITY_MB", "sim_capacity_mb"},
  };
  for (const auto& [variable, key] : moved) {
    const std::string message = config_error({{variable, "4"}, {"TMS_CONF", "copy_streams=2"}});
    EXPECT_NE(message.find(variable), std::string::npos) << message;
    EXPECT_NE(message.find(std::string("TMS_CONF=") + key + "=4"), std::string::npos) << message;
  }
  EXPECT_EQ(parse({{"TMS_COPY_STREAMS", ""}}).engine.copies.streams_per_device, 2u)
      << "an empty value is unset, as for every variable";
}

TEST(EnvConfig, DiskBackupForEveryThreadUsesTheDefaultDirectory) {
  // As in the library this one replaces: no TMS_DISK_BACKUP_DIR means a
  // temporary directory, not an error.
  const EnvConfig config = parse({{"TMS_INIT_ENABLE_DISK_BACKUP", "1"}});
  EXPECT_EQ(config.init_policy.kind, BackupKind::kDisk);
  EXPECT_FALSE(config.disk_backup_dir.has_value());
  EXPECT_EQ(config.default_disk_backup_dir, "/tmp");
  EXPECT_EQ(parse({{"TMPDIR", "/scratch/job7"}}).default_disk_backup_dir, "/scratch/job7");
  EXPECT_EQ(parse({{"TMPDIR", "relative"}}).default_disk_backup_dir, "/tmp") << "only absolute";
  EXPECT_EQ(parse({{"TMPDIR", ""}}).default_disk_backup_dir, "/tmp");
}

TEST(EnvConfig, DiskBackupChunkOfZeroMeansTheDefault) {
  EXPECT_EQ(parse({{"TMS_DISK_BACKUP_CHUNK_MB", "0"}}).engine.disk.chunk_bytes, 16 * kMiB);
  EXPECT_EQ(parse({{"TMS_DISK_BACKUP_CHUNK_MB", "1"}}).engine.disk.chunk_bytes, 1 * kMiB);
}

TEST(EnvConfig, BackendNamesRoundTrip) {
  EXPECT_EQ(parse_host_memory_kind("pinned"), HostMemoryKind::kPinned);
  EXPECT_STREQ(host_memory_kind_name(HostMemoryKind::kMmap), "mmap");
  EXPECT_THROW((void)parse_host_memory_kind("disk"), InvalidArgument);
}

// TMS_INIT_* make one backup policy, and refuse what region() refuses.
TEST(EnvConfig, InitialBackupPolicyRefusesWhatMeansNothing) {
  EXPECT_EQ(parse({{"TMS_INIT_ENABLE_DISK_BACKUP", "1"}, {"TMS_INIT_CPU_BACKUP_BACKEND", "mmap"}})
                .init_policy,
            (BackupPolicy{BackupKind::kDisk, HostMemoryKind::kPinned}));
  EXPECT_EQ(parse({{"TMS_INIT_ENABLE_CPU_BACKUP", "1"}}).init_policy,
            (BackupPolicy{BackupKind::kHost, HostMemoryKind::kPinned}));
  try {
    (void)parse({{"TMS_INIT_ENABLE_CPU_BACKUP", "1"}, {"TMS_INIT_ENABLE_DISK_BACKUP", "1"}});
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("both on"), std::string::npos) << error.what();
  }
  EXPECT_THROW((void)parse({{"TMS_INIT_CPU_BACKUP_COMPRESS", "1"}}), ConfigError);
}

}  // namespace
}  // namespace tms
