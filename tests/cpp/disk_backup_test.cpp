// Disk backup on the simulated driver: contents round-trip exactly through
// files, files exist exactly while paused, and every failure leaves the
// allocations as they were.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "backup/file_io.h"
#include "common/errors.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

constexpr std::size_t kChunk = kMiB;  // small, so allocations span several chunks

class DiskBackupTest : public ::testing::Test {
 protected:
  DiskBackupTest() : sim_(sim_options()) { make_engine(); }

  static SimDriverOptions sim_options() {
    SimDriverOptions options;
    options.device_count = 2;
    options.capacity_bytes = 64 * kMiB;
    return options;
  }

  void make_engine() {
    EngineOptions options;
    options.disk.chunk_bytes = kChunk;
    options.file_io = &io_;
    engine_ = std::make_unique<Engine>(sim_, options);
    engine_->set_disk_backup_dir(dir_.path());
  }

  DevicePtr allocate(std::size_t size, const std::string& tag = "t", int device = 0,
                     bool disk = true, bool cpu = false) {
    AllocationRequest request;
    request.size = size;
    request.device = device;
    request.tag = tag;
    request.policy.disk_backup = disk;
    request.policy.cpu_backup = cpu;
    return engine_->allocate(request);
  }

  std::string file_of(DevicePtr ptr) const {
    return dir_.path() + "/" + testing::backup_file_name(ptr);
  }

  testing::TempDir dir_;
  FaultyFileIo io_;
  SimDriver sim_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(DiskBackupTest, ContentsRoundTripExactlyForAnySize) {
  // Sizes around the 4 KiB I/O alignment and the 1 MiB chunk, on two devices.
  const std::vector<std::size_t> sizes = {
      1, 4095, 4096, 4097, kChunk, kChunk + 1, 3 * kChunk + 123, kMiB / 3, 5 * kMiB - 1, 2 * kMiB};
  std::vector<DevicePtr> ptrs;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ptrs.push_back(allocate(sizes[i], "t", static_cast<int>(i % 2)));
    testing::fill_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1));
  }
  engine_->pause("t");
  EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), 0u);
  EXPECT_EQ(dir_.files().size(), sizes.size()) << "one file per allocation";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(dir_.files().count(testing::backup_file_name(ptrs[i])), 1u);
    const std::vector<std::uint8_t> bytes = testing::read_file(file_of(ptrs[i]));
    ASSERT_EQ(bytes.size(), (sizes[i] + 4095) / 4096 * 4096) << "padded to 4 KiB";
    EXPECT_TRUE(testing::has_pattern(reinterpret_cast<std::uintptr_t>(bytes.data()), sizes[i],
                                     static_cast<std::uint8_t>(i + 1)));
    EXPECT_EQ(engine_->backup_pointer(ptrs[i], sizes[i]), nullptr) << "no host copy";
  }
  EXPECT_EQ(sim_.host_bytes(), 2 * kChunk) << "only the bounded staging buffer";

  engine_->resume("t");
  EXPECT_TRUE(dir_.files().empty()) << "files are removed after resume";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1)))
        << "size " << sizes[i];
  }
  // A second cycle reuses the staging buffer.
  const std::size_t host_allocs = sim_.call_count(SimCall::kHostAlloc);
  engine_->pause(std::nullopt);
  engine_->resume(std::nullopt);
  EXPECT_EQ(sim_.call_count(SimCall::kHostAlloc), host_allocs);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1)));
    engine_->free(ptrs[i]);
  }
  EXPECT_TRUE(dir_.files().empty());
}

TEST_F(DiskBackupTest, ManySmallAllocations) {
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 24; ++i) {
    ptrs.push_back(allocate(1000 + 37 * static_cast<std::size_t>(i), "small", i % 2));
    testing::fill_pattern(ptrs.back(), 1000 + 37 * static_cast<std::size_t>(i),
                          static_cast<std::uint8_t>(i));
  }
  engine_->pause("small");
  EXPECT_EQ(dir_.files().size(), ptrs.size());
  engine_->resume("small");
  for (int i = 0; i < 24; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)],
                                     1000 + 37 * static_cast<std::size_t>(i),
                                     static_cast<std::uint8_t>(i)));
    engine_->free(ptrs[static_cast<std::size_t>(i)]);
  }
  EXPECT_TRUE(dir_.files().empty());
}

TEST_F(DiskBackupTest, BufferedFallbackAndShortTransfersKeepContentsExact) {
  io_.set_refuse_direct_io(true);  // as on tmpfs
  io_.set_max_transfer(1000);      // every pwrite/pread moves at most 1000 bytes
  const std::size_t size = 2 * kChunk + 777;
  const DevicePtr ptr = allocate(size);
  testing::fill_pattern(ptr, size, 3);
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(ptr, size, 3));
  EXPECT_GT(io_.call_count(FileCall::kPwrite), size / 1000);
  engine_->free(ptr);
}

TEST_F(DiskBackupTest, DirectIoWithShortAlignedTransfers) {
  io_.set_max_transfer(64 * 1024);
  const std::size_t size = 3 * kChunk + 5;
  const DevicePtr ptr = allocate(size);
  testing::fill_pattern(ptr, size, 8);
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(ptr, size, 8));
  engine_->free(ptr);
}

TEST_F(DiskBackupTest, DiskWinsOverCpuBackupAndMixesWithHostBackups) {
  const DevicePtr both = allocate(2 * kMiB, "t", 0, /*disk=*/true, /*cpu=*/true);
  const DevicePtr host = allocate(2 * kMiB, "t", 1, /*disk=*/false, /*cpu=*/true);
  const DevicePtr none = allocate(2 * kMiB, "t", 0, /*disk=*/false, /*cpu=*/false);
  testing::fill_pattern(both, 2 * kMiB, 1);
  testing::fill_pattern(host, 2 * kMiB, 2);
  testing::fill_pattern(none, 2 * kMiB, 3);
  engine_->pause("t");
  EXPECT_EQ(dir_.files().size(), 1u);
  EXPECT_EQ(engine_->backup_pointer(both, 64), nullptr);
  EXPECT_NE(engine_->backup_pointer(host, 64), nullptr);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(both, 2 * kMiB, 1));
  EXPECT_TRUE(testing::has_pattern(host, 2 * kMiB, 2));
  EXPECT_TRUE(testing::all_zero(none, 2 * kMiB));
  engine_->free(both);
  engine_->free(host);
  engine_->free(none);
}

TEST_F(DiskBackupTest, FilesGoWhenFreedWhilePaused) {
  const DevicePtr a = allocate(2 * kMiB);
  const DevicePtr b = allocate(2 * kMiB);
  engine_->pause("t");
  EXPECT_EQ(dir_.files().size(), 2u);
  engine_->free(a);
  EXPECT_EQ(dir_.files(), std::set<std::string>{testing::backup_file_name(b)});
  engine_->free(b);
  EXPECT_TRUE(dir_.files().empty());
}

TEST_F(DiskBackupTest, FilesGoWhenTheEngineIsDestroyed) {
  (void)allocate(2 * kMiB);
  (void)allocate(kMiB + 3, "other", 1);
  engine_->pause(std::nullopt);
  EXPECT_EQ(dir_.files().size(), 2u);
  engine_.reset();
  EXPECT_TRUE(dir_.files().empty());
  EXPECT_EQ(sim_.host_bytes(), 0u) << "staging buffer given back";
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  EXPECT_EQ(sim_.live_streams(), 0u);
}

TEST_F(DiskBackupTest, RemoveDiskBackupsForExitHandlers) {
  const DevicePtr a = allocate(2 * kMiB);
  testing::fill_pattern(a, 2 * kMiB, 5);
  engine_->pause("t");
  engine_->remove_disk_backups();
  EXPECT_TRUE(dir_.files().empty());
  engine_->remove_disk_backups();  // harmless again
  engine_->resume("t");
  EXPECT_TRUE(testing::all_zero(a, 2 * kMiB)) << "the contents went with the file";
  engine_->free(a);
}

TEST_F(DiskBackupTest, NoDirectoryIsAClearErrorAtAllocationTime) {
  EngineOptions options;
  options.file_io = &io_;
  Engine engine(sim_, options);
  AllocationRequest request;
  request.size = kMiB;
  request.policy.disk_backup = true;
  try {
    (void)engine.allocate(request);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("TMS_DISK_BACKUP_DIR"), std::string::npos) << message;
    EXPECT_NE(message.find("set_disk_backup_dir"), std::string::npos) << message;
  }
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  EXPECT_THROW(engine.set_disk_backup_dir(""), InvalidArgument);

  engine.set_disk_backup_dir(dir_.path() + "/missing");
  try {
    (void)engine.allocate(request);
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("/missing"), std::string::npos) << error.what();
  }
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  request.policy.disk_backup = false;
  engine.free(engine.allocate(request));  // other allocations are unaffected
}

TEST_F(DiskBackupTest, DirectoryGoneAtPauseLeavesEverythingActive) {
  testing::TempDir doomed;
  engine_->set_disk_backup_dir(doomed.path() + "/");
  const DevicePtr a = allocate(2 * kMiB);
  const DevicePtr b = allocate(kMiB, "t", 0, false, true);
  testing::fill_pattern(a, 2 * kMiB, 1);
  testing::fill_pattern(b, kMiB, 2);
  ASSERT_EQ(::rmdir(doomed.path().c_str()), 0);
  EXPECT_THROW(engine_->pause("t"), IoError);
  EXPECT_EQ(sim_.physical_bytes(0), 4 * kMiB) << "still active";
  EXPECT_TRUE(testing::has_pattern(a, 2 * kMiB, 1));
  EXPECT_TRUE(testing::has_pattern(b, kMiB, 2));
  engine_->set_disk_backup_dir(dir_.path());  // files follow the current directory
  engine_->pause("t");
  EXPECT_EQ(dir_.files().size(), 1u);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, 2 * kMiB, 1));
  EXPECT_TRUE(testing::has_pattern(b, kMiB, 2));
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, DiskFullDuringPauseRemovesPartialFilesAndKeepsEverythingActive) {
  const DevicePtr a = allocate(3 * kMiB + 1);
  const DevicePtr b = allocate(3 * kMiB + 2);
  testing::fill_pattern(a, 3 * kMiB + 1, 1);
  testing::fill_pattern(b, 3 * kMiB + 2, 2);
  io_.fail_call(FileCall::kPwrite, 6, ENOSPC);  // in the second file
  try {
    engine_->pause("t");
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("No space left"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("TMS_DISK_BACKUP_DIR"), std::string::npos);
  }
  EXPECT_TRUE(dir_.files().empty()) << "partial files are removed";
  EXPECT_EQ(sim_.physical_bytes(0), 8 * kMiB);
  EXPECT_TRUE(testing::has_pattern(a, 3 * kMiB + 1, 1));
  EXPECT_TRUE(testing::has_pattern(b, 3 * kMiB + 2, 2));
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, 3 * kMiB + 1, 1));
  EXPECT_TRUE(testing::has_pattern(b, 3 * kMiB + 2, 2));
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, ReadFailureDuringResumeKeepsEverythingPausedWithItsFiles) {
  const DevicePtr a = allocate(3 * kMiB + 1);
  const DevicePtr b = allocate(2 * kMiB, "t", 0, false, true);
  testing::fill_pattern(a, 3 * kMiB + 1, 1);
  testing::fill_pattern(b, 2 * kMiB, 2);
  engine_->pause("t");
  const std::set<std::string> files = dir_.files();
  io_.fail_call(FileCall::kPread, 3, EIO);
  EXPECT_THROW(engine_->resume("t"), IoError);
  EXPECT_EQ(dir_.files(), files);
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  EXPECT_NE(engine_->backup_pointer(b, 64), nullptr);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, 3 * kMiB + 1, 1));
  EXPECT_TRUE(testing::has_pattern(b, 2 * kMiB, 2));
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, TruncatedFileIsAnErrorNotGarbage) {
  const DevicePtr a = allocate(3 * kMiB);
  engine_->pause("t");
  ASSERT_EQ(::truncate(file_of(a).c_str(), kMiB), 0);
  try {
    engine_->resume("t");
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("truncated"), std::string::npos) << error.what();
  }
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  engine_->free(a);
  EXPECT_TRUE(dir_.files().empty());
}

TEST_F(DiskBackupTest, StaleFileOfTheSameNameIsLeftAlone) {
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 4);
  const std::string stale = file_of(a);
  const int fd = ::open(stale.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "stale", 5), 5);
  ::close(fd);
  engine_->pause("t");
  EXPECT_EQ(dir_.files().size(), 2u);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 4));
  EXPECT_EQ(dir_.files(), std::set<std::string>{testing::backup_file_name(a)});
  EXPECT_EQ(testing::read_file(stale).size(), 5u);
  engine_->free(a);
}

TEST_F(DiskBackupTest, FailedUnlinkAfterResumeIsRetriedLater) {
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 6);
  engine_->pause("t");
  io_.fail_call(FileCall::kUnlink, 1, EBUSY);
  engine_->resume("t");  // the point of no return: it completes
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 6));
  EXPECT_EQ(dir_.files().size(), 1u);
  EXPECT_EQ(engine_->stats().deferred_releases, 1u);
  engine_->pause("no-such-tag");  // any operation retries
  EXPECT_EQ(engine_->stats().deferred_releases, 0u);
  EXPECT_TRUE(dir_.files().empty());
  engine_->free(a);
}

TEST_F(DiskBackupTest, DirectoryCanChangeWhilePaused) {
  testing::TempDir second;
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 7);
  engine_->pause("t");
  engine_->set_disk_backup_dir(second.path());
  const DevicePtr b = allocate(kMiB);
  testing::fill_pattern(b, kMiB, 8);
  engine_->pause("t");
  EXPECT_EQ(dir_.files().size(), 1u);
  EXPECT_EQ(second.files().size(), 1u);
  engine_->resume("t");
  EXPECT_TRUE(dir_.files().empty());
  EXPECT_TRUE(second.files().empty());
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 7));
  EXPECT_TRUE(testing::has_pattern(b, kMiB, 8));
  engine_->free(a);
  engine_->free(b);
}

}  // namespace
}  // namespace tms
