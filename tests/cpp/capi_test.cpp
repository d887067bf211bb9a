// The C ABI of the shared library on the simulated driver with two devices
// of 256 MiB (main() sets the environment before the engine reads it).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "torch_memory_saver/tms.h"
#include "torch_memory_saver/tms_testing.h"

namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(CApi, RunsOnTheSimulatedDriver) {
  ASSERT_EQ(tms_init(), TMS_OK) << tms_last_error();
  EXPECT_STREQ(tms_driver_name(), "sim");
  EXPECT_STRNE(tms_version(), "");
}

TEST(CApi, TheSimulatedDevicesAreTheOnesTmsConfAsksFor) {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
  ASSERT_EQ(tms_device_memory(1, &free_bytes, &total_bytes), TMS_OK) << tms_last_error();
  EXPECT_EQ(total_bytes, 256 * kMiB);
  EXPECT_EQ(tms_device_memory(2, &free_bytes, &total_bytes), TMS_ERROR_INVALID_ARGUMENT);
}

TEST(CApi, AllocatePauseResumeKeepsBackedUpBytes) {
  ASSERT_EQ(tms_set_current_tag("capi"), TMS_OK);
  ASSERT_EQ(tms_set_enable_cpu_backup(true), TMS_OK);
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, 3 * kMiB, 0), TMS_OK) << tms_last_error();
  std::memset(ptr, 0x5a, 3 * kMiB);
  ASSERT_EQ(tms_pause("capi"), TMS_OK) << tms_last_error();
  const uint8_t* backup = tms_get_cpu_backup_pointer(static_cast<uint8_t*>(ptr) + 10, 100);
  ASSERT_NE(backup, nullptr) << tms_last_error();
  EXPECT_EQ(backup[99], 0x5a);
  ASSERT_EQ(tms_resume("capi"), TMS_OK) << tms_last_error();
  EXPECT_EQ(static_cast<uint8_t*>(ptr)[3 * kMiB - 1], 0x5a);
  EXPECT_EQ(tms_drain_host_releases(), TMS_OK);
  EXPECT_EQ(tms_trim_host_memory(), TMS_OK);
  EXPECT_TRUE(tms_owns(static_cast<uint8_t*>(ptr) + 5));
  ASSERT_EQ(tms_free(ptr), TMS_OK);
  EXPECT_FALSE(tms_owns(ptr));
  tms_set_enable_cpu_backup(false);
  tms_set_current_tag("default");
}

std::string g_logged;  // what capture_line was given, as "level: message" lines

int capture_line(int level, const char* message) {
  g_logged += std::to_string(level) + ": " + message + "\n";
  return 1;
}

TEST(CApi, EngineLogLinesGoToTheCallbackOrToStderrWithoutOne) {
  ASSERT_EQ(tms_set_current_tag("capi-logged"), TMS_OK);
  ASSERT_EQ(tms_set_enable_cpu_backup(true), TMS_OK);
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, kMiB, 0), TMS_OK) << tms_last_error();
  tms_set_enable_cpu_backup(false);
  tms_set_current_tag("default");

  // A program that installs no callback (no Python) reads lines on stderr.
  ASSERT_EQ(tms_pause("capi-logged"), TMS_OK) << tms_last_error();
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(tms_discard_backup(ptr), TMS_OK) << tms_last_error();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("[torch_memory_saver ERROR] discarded the backup of "), std::string::npos)
      << err;

  // With a callback, the next line (the resume's warning) goes to it alone.
  ASSERT_EQ(tms_set_log_callback(capture_line), TMS_OK) << tms_last_error();
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(tms_resume("capi-logged"), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_flush_log(), TMS_OK);
  ASSERT_EQ(tms_set_log_callback(nullptr), TMS_OK);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(g_logged.rfind("1: resumed ", 0), 0u) << g_logged;
  EXPECT_NE(g_logged.find(" WITHOUT its contents: its backup was discarded\n"), std::string::npos)
      << g_logged;
  ASSERT_EQ(tms_free(ptr), TMS_OK) << tms_last_error();
}

TEST(CApi, CompressedBackupRoundTripsAndIsNotReadableInPlace) {
  ASSERT_EQ(tms_set_current_tag("capi-compressed"), TMS_OK);
  ASSERT_EQ(tms_set_enable_cpu_backup(true), TMS_OK);
  ASSERT_EQ(tms_set_cpu_backup_compress(true), TMS_OK);
  EXPECT_TRUE(tms_get_cpu_backup_compress());
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, 3 * kMiB + 3, 0), TMS_OK) << tms_last_error();
  auto* bytes = static_cast<uint8_t*>(ptr);
  for (size_t i = 0; i < 3 * kMiB + 3; ++i) bytes[i] = static_cast<uint8_t>(i % 2 ? 0x3c : i * 7);
  ASSERT_EQ(tms_pause("capi-compressed"), TMS_OK) << tms_last_error();
  EXPECT_EQ(tms_get_cpu_backup_pointer(bytes, 16), nullptr);
  EXPECT_EQ(tms_last_status(), TMS_ERROR_INVALID_STATE);
  EXPECT_NE(std::string(tms_last_error()).find("compressed"), std::string::npos);
  ASSERT_EQ(tms_resume("capi-compressed"), TMS_OK) << tms_last_error();
  bool exact = true;
  for (size_t i = 0; i < 3 * kMiB + 3; ++i) {
    exact = exact && bytes[i] == static_cast<uint8_t>(i % 2 ? 0x3c : i * 7);
  }
  EXPECT_TRUE(exact);
  ASSERT_EQ(tms_free(ptr), TMS_OK);
  tms_set_cpu_backup_compress(false);
  tms_set_enable_cpu_backup(false);
  tms_set_current_tag("default");
}

TEST(CApi, BadArgumentsReturnAStatusAndAMessage) {
  EXPECT_EQ(tms_set_current_tag(nullptr), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tms_last_error()).find("tag"), std::string::npos);
  EXPECT_EQ(tms_last_status(), TMS_ERROR_INVALID_ARGUMENT);

  EXPECT_EQ(tms_set_cpu_backup_backend("floppy"), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tms_last_error()).find("pinned, mmap"), std::string::npos);

  int local = 0;
  EXPECT_EQ(tms_free(&local), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_malloc(nullptr, 10, 0), TMS_ERROR_INVALID_ARGUMENT);
  void* ptr = nullptr;
  EXPECT_EQ(tms_malloc(&ptr, 0, 0), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_malloc(&ptr, kMiB, 7), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_set_disk_backup_dir("/dev/null/dir"), TMS_ERROR_IO);
  EXPECT_EQ(tms_set_disk_backup_dir(nullptr), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_sim_fail_call("warp_drive", 1, false), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_get_cpu_backup_pointer(reinterpret_cast<uint8_t*>(&local), 4), nullptr);
  EXPECT_EQ(tms_last_status(), TMS_OK) << "a foreign pointer simply has no backup";
  EXPECT_EQ(tms_free(nullptr), TMS_OK);

  size_t required = 0;
  char tiny[4];
  EXPECT_EQ(tms_stats_json(tiny, sizeof(tiny), &required), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_GT(required, sizeof(tiny));
  std::string json(required, '\0');
  ASSERT_EQ(tms_stats_json(json.data(), json.size(), &required), TMS_OK);
  EXPECT_NE(json.find("\"driver\": \"sim\""), std::string::npos) << json;
  EXPECT_STREQ(tms_status_name(TMS_ERROR_OUT_OF_MEMORY), "TMS_ERROR_OUT_OF_MEMORY");
}

TEST(CApi, DiskBackupRoundTripsThroughAFileThatIsRemovedOnResume) {
  char dir[] = "/tmp/tms-capi-disk-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string missing = std::string(dir) + "/missing";
  ASSERT_EQ(tms_set_disk_backup_dir(missing.c_str()), TMS_OK) << "created";
  char stored[256];
  size_t required = 0;
  ASSERT_EQ(tms_get_disk_backup_dir(stored, sizeof stored, &required), TMS_OK);
  EXPECT_EQ(std::string(stored), missing);
  EXPECT_EQ(required, missing.size() + 1);
  EXPECT_EQ(rmdir(missing.c_str()), 0);
  const std::string plain_file = std::string(dir) + "/not-a-directory";
  std::fclose(std::fopen(plain_file.c_str(), "w"));
  EXPECT_EQ(tms_set_disk_backup_dir(plain_file.c_str()), TMS_ERROR_IO);
  EXPECT_NE(std::string(tms_last_error()).find(plain_file), std::string::npos) << tms_last_error();
  unlink(plain_file.c_str());
  ASSERT_EQ(tms_set_disk_backup_dir(dir), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_set_current_tag("capi-disk"), TMS_OK);
  ASSERT_EQ(tms_set_enable_disk_backup(true), TMS_OK);
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, 3 * kMiB + 11, 1), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_set_enable_disk_backup(false), TMS_OK);
  std::memset(ptr, 0x3c, 3 * kMiB + 11);
  ASSERT_EQ(tms_pause("capi-disk"), TMS_OK) << tms_last_error();
  EXPECT_EQ(tms_get_cpu_backup_pointer(static_cast<uint8_t*>(ptr), 64), nullptr);
  ASSERT_EQ(tms_resume("capi-disk"), TMS_OK) << tms_last_error();
  EXPECT_EQ(static_cast<uint8_t*>(ptr)[0], 0x3c);
  EXPECT_EQ(static_cast<uint8_t*>(ptr)[3 * kMiB + 10], 0x3c);
  ASSERT_EQ(tms_free(ptr), TMS_OK);
  EXPECT_EQ(rmdir(dir), 0) << "no file left behind";
  tms_set_current_tag("default");
}

TEST(CApi, OutOfMemoryOnResumeIsAStatusNotACrash) {
  tms_set_current_tag("oom");
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, 64 * kMiB, 1), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_pause("oom"), TMS_OK);
  ASSERT_EQ(tms_sim_set_capacity(32 * kMiB), TMS_OK);
  EXPECT_EQ(tms_resume("oom"), TMS_ERROR_OUT_OF_MEMORY);
  EXPECT_NE(std::string(tms_last_error()).find("67108864 bytes"), std::string::npos)
      << tms_last_error();
  EXPECT_EQ(tms_torch_malloc(static_cast<ssize_t>(64 * kMiB), 1, nullptr), nullptr);
  EXPECT_EQ(tms_last_status(), TMS_ERROR_OUT_OF_MEMORY);
  ASSERT_EQ(tms_sim_set_capacity(256 * kMiB), TMS_OK);
  EXPECT_EQ(tms_resume("oom"), TMS_OK) << tms_last_error();
  EXPECT_EQ(tms_free(ptr), TMS_OK);
  tms_set_current_tag("default");
}

TEST(CApi, InjectedDriverFailureIsReportedAndRetrySucceeds) {
  tms_set_current_tag("inject");
  void* ptr = nullptr;
  ASSERT_EQ(tms_malloc(&ptr, kMiB, 0), TMS_OK);
  ASSERT_EQ(tms_sim_fail_call("unmap", 1, false), TMS_OK);
  EXPECT_EQ(tms_pause("inject"), TMS_ERROR_DRIVER);
  EXPECT_NE(std::string(tms_last_error()).find("sim.unmap"), std::string::npos);
  static_cast<char*>(ptr)[0] = 1;  // still active and mapped
  EXPECT_EQ(tms_pause("inject"), TMS_OK);
  EXPECT_EQ(tms_resume("inject"), TMS_OK);
  EXPECT_EQ(tms_free(ptr), TMS_OK);
  tms_set_current_tag("default");
}

TEST(CApi, TorchAllocatorEntryPointsUseTheThreadsTag) {
  tms_set_current_tag("torch-pool");
  void* ptr = tms_torch_malloc(static_cast<ssize_t>(kMiB), 0, nullptr);
  ASSERT_NE(ptr, nullptr) << tms_last_error();
  ASSERT_EQ(tms_pause("torch-pool"), TMS_OK);
  size_t required = 0;
  tms_stats_json(nullptr, 0, &required);
  std::string json(required, '\0');
  ASSERT_EQ(tms_stats_json(json.data(), json.size(), &required), TMS_OK);
  EXPECT_NE(json.find("\"tag\": \"torch-pool\""), std::string::npos) << json;
  tms_torch_free(ptr, static_cast<ssize_t>(kMiB), 0, nullptr);
  EXPECT_FALSE(tms_owns(ptr));
  EXPECT_EQ(tms_torch_malloc(-1, 0, nullptr), nullptr);
  tms_set_current_tag("default");
}

TEST(CApi, RegionSettingsArePerThread) {
  ASSERT_EQ(tms_set_interesting_region(true), TMS_OK);
  ASSERT_EQ(tms_set_current_tag("main-thread"), TMS_OK);
  const tms_backup_policy host_mmap{TMS_BACKUP_HOST, TMS_HOST_MEMORY_MMAP};
  ASSERT_EQ(tms_set_backup_policy(&host_mmap), TMS_OK);
  bool other_interesting = true;
  std::string other_tag;
  tms_backup_policy other_policy{-1, -1};
  std::thread([&] {
    other_interesting = tms_get_interesting_region();
    other_tag = tms_get_current_tag();
    tms_get_backup_policy(&other_policy);
    tms_set_current_tag("worker");
  }).join();
  EXPECT_FALSE(other_interesting);
  EXPECT_EQ(other_tag, "default");
  EXPECT_EQ(other_policy.kind, TMS_BACKUP_NONE);
  EXPECT_EQ(other_policy.host_memory, TMS_HOST_MEMORY_DEFAULT);
  EXPECT_STREQ(tms_get_current_tag(), "main-thread");
  EXPECT_STREQ(tms_get_cpu_backup_backend(), "mmap");
  tms_set_interesting_region(false);
  tms_set_current_tag("default");
  const tms_backup_policy none{TMS_BACKUP_NONE, TMS_HOST_MEMORY_DEFAULT};
  tms_set_backup_policy(&none);
}

// The policy is one value: what comes back is what was set (the default host
// memory resolved), and a policy that means nothing is refused whole,
// leaving the thread's policy as it was.
TEST(CApi, BackupPolicyRoundTripsAndRefusesWhatMeansNothing) {
  tms_backup_policy read{-1, -1};
  const tms_backup_policy compressed{TMS_BACKUP_HOST_COMPRESSED, TMS_HOST_MEMORY_DEFAULT};
  ASSERT_EQ(tms_set_backup_policy(&compressed), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.kind, TMS_BACKUP_HOST_COMPRESSED);
  EXPECT_EQ(read.host_memory, TMS_HOST_MEMORY_PINNED) << "the process default, resolved";
  EXPECT_TRUE(tms_get_enable_cpu_backup());
  EXPECT_TRUE(tms_get_cpu_backup_compress());
  EXPECT_FALSE(tms_get_enable_disk_backup());

  const tms_backup_policy meaningless[] = {
      {TMS_BACKUP_DISK, TMS_HOST_MEMORY_MMAP},    // host memory without a host copy
      {TMS_BACKUP_NONE, TMS_HOST_MEMORY_PINNED},  // likewise
      {4, TMS_HOST_MEMORY_DEFAULT},               // no such kind
      {-1, TMS_HOST_MEMORY_DEFAULT},              // likewise
      {TMS_BACKUP_HOST, 3},                       // no such host memory
  };
  for (const tms_backup_policy& policy : meaningless) {
    EXPECT_EQ(tms_set_backup_policy(&policy), TMS_ERROR_INVALID_ARGUMENT)
        << policy.kind << "/" << policy.host_memory;
    ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
    EXPECT_EQ(read.kind, TMS_BACKUP_HOST_COMPRESSED) << "unchanged after a refusal";
  }
  EXPECT_EQ(tms_set_backup_policy(nullptr), TMS_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tms_get_backup_policy(nullptr), TMS_ERROR_INVALID_ARGUMENT);

  const tms_backup_policy disk{TMS_BACKUP_DISK, TMS_HOST_MEMORY_DEFAULT};
  ASSERT_EQ(tms_set_backup_policy(&disk), TMS_OK);
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.host_memory, TMS_HOST_MEMORY_DEFAULT) << "no host memory without a host copy";
  const tms_backup_policy none{TMS_BACKUP_NONE, TMS_HOST_MEMORY_DEFAULT};
  ASSERT_EQ(tms_set_backup_policy(&none), TMS_OK);
}

// The per-field calls of the library this one replaces move the one policy
// and refuse the steps that would make it mean nothing.
TEST(CApi, PerFieldPolicyCallsRefuseCombinationsThatMeanNothing) {
  tms_backup_policy read{-1, -1};
  EXPECT_EQ(tms_set_cpu_backup_compress(true), TMS_ERROR_INVALID_ARGUMENT) << "no CPU backup";
  EXPECT_EQ(tms_set_cpu_backup_backend("mmap"), TMS_ERROR_INVALID_ARGUMENT) << "no CPU backup";
  EXPECT_NE(std::string(tms_last_error()).find("enable the CPU backup first"), std::string::npos)
      << tms_last_error();

  ASSERT_EQ(tms_set_enable_cpu_backup(true), TMS_OK);
  ASSERT_EQ(tms_set_cpu_backup_backend("mmap"), TMS_OK);
  ASSERT_EQ(tms_set_cpu_backup_compress(true), TMS_OK);
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.kind, TMS_BACKUP_HOST_COMPRESSED);
  EXPECT_EQ(read.host_memory, TMS_HOST_MEMORY_MMAP);
  EXPECT_EQ(tms_set_enable_disk_backup(true), TMS_ERROR_INVALID_ARGUMENT) << "CPU and disk";
  EXPECT_NE(std::string(tms_last_error()).find("CPU and disk backup together"), std::string::npos)
      << tms_last_error();
  ASSERT_EQ(tms_set_cpu_backup_compress(false), TMS_OK);
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.kind, TMS_BACKUP_HOST);
  EXPECT_EQ(read.host_memory, TMS_HOST_MEMORY_MMAP);

  ASSERT_EQ(tms_set_enable_cpu_backup(false), TMS_OK);
  ASSERT_EQ(tms_set_enable_disk_backup(true), TMS_OK);
  EXPECT_EQ(tms_set_enable_cpu_backup(true), TMS_ERROR_INVALID_ARGUMENT) << "disk and CPU";
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.kind, TMS_BACKUP_DISK);
  EXPECT_STREQ(tms_get_cpu_backup_backend(), "pinned") << "the default without a host copy";
  ASSERT_EQ(tms_set_enable_disk_backup(false), TMS_OK);
  EXPECT_FALSE(tms_get_enable_disk_backup());
  ASSERT_EQ(tms_get_backup_policy(&read), TMS_OK);
  EXPECT_EQ(read.kind, TMS_BACKUP_NONE);
}

TEST(CApi, ProcessWideSettingsRoundTrip) {
  ASSERT_EQ(set_memory_margin_bytes(1234), TMS_OK);
  EXPECT_EQ(tms_get_memory_margin_bytes(), 1234u);
  ASSERT_EQ(set_memory_margin_bytes(0), TMS_OK);
  ASSERT_EQ(tms_set_retain_cpu_backup(true), TMS_OK);
  EXPECT_TRUE(tms_get_retain_cpu_backup());
  ASSERT_EQ(tms_set_retain_cpu_backup(false), TMS_OK);
  EXPECT_EQ(tms_set_enable_disk_backup(true), TMS_OK);
  EXPECT_TRUE(tms_get_enable_disk_backup());
  EXPECT_EQ(tms_set_enable_disk_backup(false), TMS_OK);
  EXPECT_FALSE(tms_get_enable_disk_backup());
  EXPECT_EQ(tms_set_disk_backup_dir("/tmp"), TMS_OK);
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
  ASSERT_EQ(tms_device_memory(1, &free_bytes, &total_bytes), TMS_OK);
  EXPECT_EQ(total_bytes, 256 * kMiB);
}

TEST(CApi, ForkedChildGetsAClearErrorInsteadOfACrash) {
  ASSERT_EQ(tms_init(), TMS_OK);
  const pid_t pid = fork();
  if (pid == 0) {
    // The child inherits the parent's engine but not its GPU context.
    const int status = tms_pause(nullptr);
    const bool names_fork = std::string(tms_last_error()).find("fork") != std::string::npos;
    void* ptr = nullptr;
    const int malloc_status = tms_malloc(&ptr, kMiB, 0);
    _exit(status == TMS_ERROR_INVALID_STATE && names_fork &&
                  malloc_status == TMS_ERROR_INVALID_STATE
              ? 0
              : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child crashed";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(tms_pause("still-works-in-parent"), TMS_OK);
}

}  // namespace

int main(int argc, char** argv) {
  setenv("TMS_DRIVER", "sim", 1);
  setenv("TMS_CONF", "sim_devices=2,sim_capacity_mb=256", 1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
