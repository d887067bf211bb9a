#include "config/env_config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/errors.h"

namespace tms {
namespace {

EnvConfig parse(const std::map<std::string, std::string>& env) {
  return parse_env_config([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(EnvConfig, DefaultsWhenNothingIsSet) {
  const EnvConfig config = parse({});
  EXPECT_FALSE(config.init_enable);
  EXPECT_FALSE(config.init_enable_cpu_backup);
  EXPECT_EQ(config.cpu_backup_backend, HostMemoryKind::kPinned);
  EXPECT_EQ(config.driver, DriverKind::kCuda);
  EXPECT_EQ(config.disk_backup_chunk_mb, 16u);
  EXPECT_EQ(config.disk_backup_write_depth, 8u);
  EXPECT_EQ(config.disk_backup_read_depth, 8u);
  EXPECT_FALSE(config.disk_backup_dir.has_value());
  EXPECT_EQ(config.host_prepare_threads, 0u) << "0: the engine picks from the core count";
  EXPECT_EQ(config.host_register_chunk_mb, 64u);
  EXPECT_EQ(config.host_small_request_mb, 64u);
  EXPECT_EQ(config.copy_chunk_mb, 64u);
  EXPECT_EQ(config.copy_streams, 2u);
}

TEST(EnvConfig, ReadsEveryVariable) {
  const EnvConfig config = parse({{"TMS_INIT_ENABLE", "1"},
                                  {"TMS_INIT_ENABLE_CPU_BACKUP", "true"},
                                  {"TMS_INIT_ENABLE_DISK_BACKUP", "0"},
                                  {"TMS_INIT_CPU_BACKUP_COMPRESS", "on"},
                                  {"TMS_INIT_CPU_BACKUP_BACKEND", "MMAP"},
                                  {"TMS_RETAIN_CPU_BACKUP", "yes"},
                                  {"TMS_DISK_BACKUP_DIR", "/tmp/backups"},
                                  {"TMS_DISK_BACKUP_CHUNK_MB", "128"},
                                  {"TMS_DISK_BACKUP_WRITE_DEPTH", "6"},
                                  {"TMS_DISK_BACKUP_READ_DEPTH", "3"},
                                  {"TMS_DRIVER", "sim"},
                                  {"TMS_LOG_LEVEL", "debug"},
                                  {"TMS_SIM_DEVICES", "4"},
                                  {"TMS_SIM_CAPACITY_MB", "100"},
                                  {"TMS_HOST_PREPARE_THREADS", "12"},
                                  {"TMS_HOST_REGISTER_CHUNK_MB", "256"},
                                  {"TMS_COPY_CHUNK_MB", "32"},
                                  {"TMS_HOST_SMALL_REQUEST_MB", "8"},
                                  {"TMS_COPY_STREAMS", "4"}});
  EXPECT_TRUE(config.init_enable);
  EXPECT_TRUE(config.init_enable_cpu_backup);
  EXPECT_FALSE(config.init_enable_disk_backup);
  EXPECT_TRUE(config.init_cpu_backup_compress);
  EXPECT_EQ(config.cpu_backup_backend, HostMemoryKind::kMmap);
  EXPECT_TRUE(config.retain_cpu_backup);
  EXPECT_EQ(config.disk_backup_dir, "/tmp/backups");
  EXPECT_EQ(config.disk_backup_chunk_mb, 128u);
  EXPECT_EQ(config.disk_backup_write_depth, 6u);
  EXPECT_EQ(config.disk_backup_read_depth, 3u);
  EXPECT_EQ(config.driver, DriverKind::kSim);
  EXPECT_EQ(config.log_level, LogLevel::kDebug);
  EXPECT_EQ(config.sim_devices, 4);
  EXPECT_EQ(config.sim_capacity_bytes, std::size_t{100} << 20);
  EXPECT_EQ(config.host_prepare_threads, 12u);
  EXPECT_EQ(config.host_register_chunk_mb, 256u);
  EXPECT_EQ(config.host_small_request_mb, 8u);
  EXPECT_EQ(config.copy_chunk_mb, 32u);
  EXPECT_EQ(config.copy_streams, 4u);
}

TEST(EnvConfig, BadValuesNameTheVariableAndTheAcceptedValues) {
  const std::map<std::string, std::string> bad[] = {
      {{"TMS_INIT_ENABLE", "maybe"}},
      {{"TMS_INIT_CPU_BACKUP_BACKEND", "cuda"}},
      {{"TMS_DISK_BACKUP_CHUNK_MB", "-5"}},
      {{"TMS_DISK_BACKUP_CHUNK_MB", "12abc"}},
      {{"TMS_DISK_BACKUP_CHUNK_MB", "0"}},
      {{"TMS_DISK_BACKUP_WRITE_DEPTH", "0"}},
      {{"TMS_DISK_BACKUP_READ_DEPTH", "17"}},
      {{"TMS_DRIVER", "hip"}},
      {{"TMS_LOG_LEVEL", "loud"}},
      {{"TMS_HOST_PREPARE_THREADS", "0"}},
      {{"TMS_COPY_STREAMS", "17"}},
      {{"TMS_COPY_CHUNK_MB", "x"}},
      {{"TMS_HOST_REGISTER_CHUNK_MB", "-1"}},
  };
  for (const auto& env : bad) {
    const std::string variable = env.begin()->first;
    try {
      (void)parse(env);
      ADD_FAILURE() << variable << " accepted " << env.begin()->second;
    } catch (const ConfigError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find(variable), std::string::npos) << message;
      EXPECT_NE(message.find("accepted values"), std::string::npos) << message;
    }
  }
}

TEST(EnvConfig, DiskBackupForEveryThreadNeedsADirectory) {
  try {
    parse({{"TMS_INIT_ENABLE_DISK_BACKUP", "1"}});
    ADD_FAILURE() << "accepted disk backup with nowhere to write it";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("TMS_DISK_BACKUP_DIR"), std::string::npos);
  }
  EXPECT_TRUE(parse({{"TMS_INIT_ENABLE_DISK_BACKUP", "1"}, {"TMS_DISK_BACKUP_DIR", "/tmp"}})
                  .init_enable_disk_backup);
}

TEST(EnvConfig, BackendNamesRoundTrip) {
  EXPECT_EQ(parse_host_memory_kind("pinned"), HostMemoryKind::kPinned);
  EXPECT_STREQ(host_memory_kind_name(HostMemoryKind::kMmap), "mmap");
  EXPECT_THROW((void)parse_host_memory_kind("disk"), InvalidArgument);
}

}  // namespace
}  // namespace tms
