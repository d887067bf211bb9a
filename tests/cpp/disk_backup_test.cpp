// Disk backup on the simulated driver: contents round-trip exactly through
// files, files exist exactly while paused, and every failure leaves the
// allocations as they were.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/errors.h"
#include "core/engine.h"
#include "disk_test_support.h"
#include "faulty_file_io.h"
#include "faulty_sim.h"
#include "io/file_io.h"
#include "test_support.h"

namespace tms {
namespace {

using testing::kMiB;

constexpr std::size_t kChunk = kMiB;  // small, so allocations span several chunks
constexpr std::size_t kWriteDepth = DiskBackupOptions{}.write_depth;
constexpr std::size_t kReadDepth = DiskBackupOptions{}.read_depth;

/// Passes every call on to `inner`, and watches the transfers (pwrite,
/// pread): how many are in progress, and the most at once. hold(n) makes
/// the next n transfers wait until all n are in progress together (for at
/// most 10 s, so a pipeline that never gets there fails the test instead of
/// hanging it), so that a failure can be injected while others are in flight.
class TransferProbe final : public FileIo {
 public:
  explicit TransferProbe(FileIo& inner) : inner_(inner) {}

  void hold(std::size_t transfers) {
    std::lock_guard lock(mutex_);
    group_ = transfers;
    arrived_ = 0;
    most_ = in_flight_;
  }
  [[nodiscard]] std::size_t most_in_flight() const {
    std::lock_guard lock(mutex_);
    return most_;
  }
  [[nodiscard]] std::size_t in_flight() const {
    std::lock_guard lock(mutex_);
    return in_flight_;
  }
  /// While shut, close() of a file without a name (a backup file) waits
  /// until they are opened again, for at most 10 s.
  void shut_closes(bool shut) {
    std::lock_guard lock(mutex_);
    closes_shut_ = shut;
    gate_.notify_all();
  }
  /// What runs out until the files given back are closed: while closes are
  /// shut, the next fallocate() fails with ENOSPC (a full disk), the next
  /// pwrite() does (a full disk whose filesystem has no fallocate: it
  /// fails with EOPNOTSUPP then) or the next open() with EMFILE (a process
  /// out of descriptors), and opens them.
  enum class Shortage { kNone, kSpace, kSpaceWithoutFallocate, kDescriptors };
  void short_until_closed(Shortage shortage) {
    std::lock_guard lock(mutex_);
    shortage_ = shortage;
  }

  int open(int dir_fd, const char* path, int flags, mode_t mode) override {
    if (const int error = short_of(Shortage::kDescriptors, EMFILE); error != 0) {
      errno = error;
      return -1;
    }
    return inner_.open(dir_fd, path, flags, mode);
  }
  int fstat(int fd, struct stat* info) override { return inner_.fstat(fd, info); }
  ssize_t pwrite(int fd, const void* buffer, std::size_t count, off_t offset) override {
    if (const int error = short_of(Shortage::kSpaceWithoutFallocate, ENOSPC); error != 0) {
      errno = error;
      return -1;
    }
    return transfer([&] { return inner_.pwrite(fd, buffer, count, offset); });
  }
  ssize_t pread(int fd, void* buffer, std::size_t count, off_t offset) override {
    return transfer([&] { return inner_.pread(fd, buffer, count, offset); });
  }
  int fallocate(int fd, off_t offset, off_t length) override {
    if (const int error = short_of(Shortage::kSpace, ENOSPC); error != 0) {
      errno = error;
      return -1;
    }
    {
      std::lock_guard lock(mutex_);
      if (shortage_ == Shortage::kSpaceWithoutFallocate) {
        errno = EOPNOTSUPP;
        return -1;
      }
    }
    return inner_.fallocate(fd, offset, length);
  }
  int sync_range(int fd, off_t offset, off_t length) override {
    return inner_.sync_range(fd, offset, length);
  }
  int drop_cached(int fd, off_t offset, off_t length) override {
    return inner_.drop_cached(fd, offset, length);
  }
  int clear_direct(int fd) override { return inner_.clear_direct(fd); }
  int close(int fd) override {
    if (unnamed(fd)) {
      std::unique_lock lock(mutex_);
      gate_.wait_for(lock, std::chrono::seconds(10), [&] { return !closes_shut_; });
    }
    return inner_.close(fd);
  }
  int unlink(int dir_fd, const char* path) override { return inner_.unlink(dir_fd, path); }
  int access(int dir_fd, const char* path, int mode) override {
    return inner_.access(dir_fd, path, mode);
  }
  int mkdir(const char* path, mode_t mode) override { return inner_.mkdir(path, mode); }

 private:
  template <typename Call>
  ssize_t transfer(Call call) {
    {
      std::unique_lock lock(mutex_);
      most_ = std::max(most_, ++in_flight_);
      if (arrived_ < group_) {
        ++arrived_;
        arrivals_.notify_all();
        arrivals_.wait_for(lock, std::chrono::seconds(10), [&] { return arrived_ >= group_; });
      }
    }
    const ssize_t result = call();
    const int error = errno;
    {
      std::lock_guard lock(mutex_);
      --in_flight_;
    }
    errno = error;
    return result;
  }

  /// `error` when `shortage` is what runs out and closes are shut (which
  /// opens them: it lasts until the files given back are closed), else 0.
  int short_of(Shortage shortage, int error) {
    std::lock_guard lock(mutex_);
    if (shortage_ != shortage || !closes_shut_) return 0;
    closes_shut_ = false;
    gate_.notify_all();
    return error;
  }

  /// Whether `fd` is open on a file that no longer has a name.
  static bool unnamed(int fd) {
    char target[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t length = ::readlink(link.c_str(), target, sizeof target - 1);
    return length > 0 &&
           std::string(target, static_cast<std::size_t>(length)).ends_with(" (deleted)");
  }

  FileIo& inner_;
  mutable std::mutex mutex_;
  std::condition_variable gate_;
  bool closes_shut_ = false;
  Shortage shortage_ = Shortage::kNone;
  std::condition_variable arrivals_;
  std::size_t group_ = 0;
  std::size_t arrived_ = 0;
  std::size_t in_flight_ = 0;
  std::size_t most_ = 0;
};

/// Pages of `fd`'s file that are in the page cache.
std::size_t cached_pages(int fd) {
  struct stat info {};
  if (::fstat(fd, &info) != 0 || info.st_size == 0) return 0;
  const auto size = static_cast<std::size_t>(info.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return SIZE_MAX;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  const int result = ::mincore(map, size, resident.data());
  ::munmap(map, size);
  if (result != 0) return SIZE_MAX;
  return static_cast<std::size_t>(
      std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }));
}

/// Whether `dir` is on a filesystem whose files live in memory (tmpfs and
/// ramfs: there the page cache is the file).
bool in_memory_filesystem(const std::string& dir) {
  struct statfs info {};
  return ::statfs(dir.c_str(), &info) == 0 &&
         (info.f_type == TMPFS_MAGIC || info.f_type == RAMFS_MAGIC);
}

/// Runs `operation`, which must throw IoError with `text` in its message.
void expect_io_error(const std::function<void()>& operation, const std::string& text) {
  try {
    operation();
    ADD_FAILURE() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
  }
}

class DiskBackupTest : public ::testing::Test {
 protected:
  DiskBackupTest() : sim_({.device_count = 2, .capacity_bytes = 64 * kMiB}) { make_engine(); }

  void make_engine(DiskBackupOptions disk = {}) {
    engine_.reset();
    EngineOptions options;
    options.disk = disk;
    options.disk.chunk_bytes = kChunk;
    options.file_io = &probe_;
    engine_ = std::make_unique<Engine>(sim_, options);
    engine_->set_disk_backup_dir(dir_.path());
  }

  DevicePtr allocate(std::size_t size, const std::string& tag = "t", int device = 0,
                     bool disk = true, bool cpu = false) {
    return engine_->allocate(testing::request(
        size, device, tag, disk ? testing::disk_backup() : testing::backup_if(cpu)));
  }

  /// Backup files this process holds, once the closes that resume, free
  /// and discard hand to the closing thread are done.
  [[nodiscard]] std::size_t open_files() const {
    if (engine_) engine_->drain_host_releases();
    return testing::backup_fds(dir_.path()).size();
  }

  /// A directory whose files are on a disk, for the page cache tests: on
  /// tmpfs the page cache is where the file lives, so when $TMPDIR is in
  /// memory, one under the current (build) directory. "" when there is none.
  std::string disk_backed_dir() {
    if (!in_memory_filesystem(dir_.path())) return dir_.path();
    const std::string cwd =
        std::unique_ptr<char, decltype(&std::free)>(::getcwd(nullptr, 0), &std::free).get();
    if (in_memory_filesystem(cwd)) return {};
    if (::setenv("TMPDIR", cwd.c_str(), 1) != 0) return {};
    on_disk_ = std::make_unique<testing::TempDir>();
    ::unsetenv("TMPDIR");
    return on_disk_->path();
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::TempDir> on_disk_;
  FaultyFileIo io_;
  TransferProbe probe_{io_};
  testing::FaultySim sim_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(DiskBackupTest, ContentsRoundTripExactlyForAnySize) {
  // Sizes around the 4 KiB I/O alignment and the 1 MiB chunk, on two
  // devices; the largest spans more blocks than the staging buffer has slots.
  const std::vector<std::size_t> sizes = {1,
                                          4095,
                                          4096,
                                          4097,
                                          kChunk,
                                          kChunk + 1,
                                          3 * kChunk + 123,
                                          kMiB / 3,
                                          5 * kMiB - 1,
                                          2 * kMiB,
                                          11 * kChunk + 4097};
  std::vector<DevicePtr> ptrs;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ptrs.push_back(allocate(sizes[i], "t", static_cast<int>(i % 2)));
    testing::fill_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1));
  }
  engine_->pause("t");
  EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), 0u);
  EXPECT_EQ(open_files(), sizes.size()) << "one file per allocation";
  EXPECT_TRUE(dir_.files().empty()) << "backup files have no name";
  std::size_t padded_total = 0;
  for (const int fd : testing::backup_fds(dir_.path())) {
    struct stat info {};
    ASSERT_EQ(::fstat(fd, &info), 0);
    EXPECT_EQ(info.st_size % 4096, 0) << "padded to 4 KiB";
    padded_total += static_cast<std::size_t>(info.st_size);
  }
  std::size_t expected_total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    expected_total += (sizes[i] + 4095) / 4096 * 4096;
    EXPECT_EQ(engine_->backup_pointer(ptrs[i], sizes[i]), nullptr) << "no host copy";
  }
  EXPECT_EQ(padded_total, expected_total);
  EXPECT_EQ(sim_.host_bytes(), (kWriteDepth + 1) * kChunk)
      << "only the staging buffer: a slot per write in flight and one more";

  engine_->resume("t");
  EXPECT_EQ(open_files(), 0u) << "files are closed after resume";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1)))
        << "size " << sizes[i];
  }
  // A second cycle reuses the staging buffer.
  const std::size_t host_allocs = sim_.call_count(DriverCall::kHostAlloc);
  engine_->pause(std::nullopt);
  engine_->resume(std::nullopt);
  EXPECT_EQ(sim_.call_count(DriverCall::kHostAlloc), host_allocs);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(i + 1)));
    engine_->free(ptrs[i]);
  }
  EXPECT_EQ(open_files(), 0u);
}

TEST_F(DiskBackupTest, ManySmallAllocations) {
  std::vector<DevicePtr> ptrs;
  for (int i = 0; i < 24; ++i) {
    ptrs.push_back(allocate(1000 + 37 * static_cast<std::size_t>(i), "small", i % 2));
    testing::fill_pattern(ptrs.back(), 1000 + 37 * static_cast<std::size_t>(i),
                          static_cast<std::uint8_t>(i));
  }
  engine_->pause("small");
  EXPECT_EQ(open_files(), ptrs.size());
  engine_->resume("small");
  for (int i = 0; i < 24; ++i) {
    EXPECT_TRUE(testing::has_pattern(ptrs[static_cast<std::size_t>(i)],
                                     1000 + 37 * static_cast<std::size_t>(i),
                                     static_cast<std::uint8_t>(i)));
    engine_->free(ptrs[static_cast<std::size_t>(i)]);
  }
  EXPECT_EQ(open_files(), 0u);
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

TEST_F(DiskBackupTest, WithoutUnnamedFilesNorDirectIoANamedBackupLeavesNothingBehind) {
  // As on filesystems with neither O_TMPFILE nor O_DIRECT: Linux creates a
  // file opened with O_CREAT | O_DIRECT before it refuses O_DIRECT, so the
  // named fallback must not ask for both at once.
  io_.set_refuse_unnamed_files(true);
  io_.set_refuse_direct_io(true);
  const std::size_t size = 2 * kChunk + 13;
  const DevicePtr ptr = allocate(size);
  testing::fill_pattern(ptr, size, 8);
  engine_->pause("t");
  EXPECT_TRUE(dir_.files().empty()) << dir_.files().size() << " file(s) left in the directory";
  EXPECT_EQ(open_files(), 1u);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(ptr, size, 8));
  EXPECT_EQ(open_files(), 0u);
  EXPECT_TRUE(dir_.files().empty());
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

TEST_F(DiskBackupTest, DiskBackupsMixWithHostBackupsInOnePause) {
  const DevicePtr both = allocate(2 * kMiB, "t", 0, /*disk=*/true);
  const DevicePtr host = allocate(2 * kMiB, "t", 1, /*disk=*/false, /*cpu=*/true);
  const DevicePtr none = allocate(2 * kMiB, "t", 0, /*disk=*/false, /*cpu=*/false);
  testing::fill_pattern(both, 2 * kMiB, 1);
  testing::fill_pattern(host, 2 * kMiB, 2);
  testing::fill_pattern(none, 2 * kMiB, 3);
  engine_->pause("t");
  EXPECT_EQ(open_files(), 1u);
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
  EXPECT_EQ(open_files(), 2u);
  EXPECT_EQ(engine_->stats().entries.at(0).disk_backup_bytes, 4 * kMiB);
  engine_->free(a);
  EXPECT_EQ(open_files(), 1u);
  EXPECT_EQ(engine_->stats().entries.at(0).disk_backup_bytes, 2 * kMiB);
  engine_->free(b);
  EXPECT_EQ(open_files(), 0u);
}

TEST_F(DiskBackupTest, FilesGoWhenTheEngineIsDestroyed) {
  (void)allocate(2 * kMiB);
  (void)allocate(kMiB + 3, "other", 1);
  engine_->pause(std::nullopt);
  EXPECT_EQ(open_files(), 2u);
  engine_.reset();
  EXPECT_EQ(open_files(), 0u);
  EXPECT_EQ(sim_.host_bytes(), 0u) << "staging buffer given back";
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  EXPECT_EQ(sim_.live_streams(), 0u);
}

TEST_F(DiskBackupTest, RemoveDiskBackupsForExitHandlers) {
  const DevicePtr a = allocate(2 * kMiB);
  testing::fill_pattern(a, 2 * kMiB, 5);
  engine_->pause("t");
  engine_->remove_disk_backups();
  EXPECT_EQ(open_files(), 0u);
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
  request.policy = testing::disk_backup();
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

  testing::TempDir doomed;
  engine.set_disk_backup_dir(doomed.path());
  ASSERT_EQ(::rmdir(doomed.path().c_str()), 0);
  try {
    (void)engine.allocate(request);
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find(doomed.path()), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("does not exist"), std::string::npos) << error.what();
  }
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
  request.policy = {};
  engine.free(engine.allocate(request));  // other allocations are unaffected
}

TEST_F(DiskBackupTest, TheDefaultDirectoryServesWhenNoneIsSet) {
  EngineOptions options;
  options.file_io = &io_;
  Engine engine(sim_, options);
  testing::TempDir parent;
  const std::string fallback = parent.path() + "/made-at-first-use";
  engine.set_default_disk_backup_dir(fallback);
  EXPECT_EQ(engine.disk_backup_dir(), fallback) << "reported before it is used";
  EXPECT_NE(::access(fallback.c_str(), F_OK), 0) << "nothing is created until disk backup is used";
  AllocationRequest request;
  request.size = 2 * kMiB;
  request.tag = "t";
  request.policy = testing::disk_backup();
  const DevicePtr a = engine.allocate(request);
  testing::fill_pattern(a, 2 * kMiB, 5);
  engine.pause("t");
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  engine.resume("t");
  EXPECT_TRUE(testing::has_pattern(a, 2 * kMiB, 5));
  EXPECT_EQ(::access(fallback.c_str(), F_OK), 0);
  engine.free(a);

  // An unusable default fails the allocation that needs it, naming it and the way out.
  Engine other(sim_, options);
  other.set_default_disk_backup_dir("/dev/null/below");
  try {
    (void)other.allocate(request);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("/dev/null/below"), std::string::npos) << message;
    EXPECT_NE(message.find("TMS_DISK_BACKUP_DIR"), std::string::npos) << message;
  }
  EXPECT_EQ(sim_.reserved_bytes(), 0u);
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
  EXPECT_EQ(open_files(), 1u);
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
  EXPECT_EQ(open_files(), 0u) << "partial files are removed";
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
  const std::vector<int> files = testing::backup_fds(dir_.path());
  io_.fail_call(FileCall::kPread, 3, EIO);
  EXPECT_THROW(engine_->resume("t"), IoError);
  EXPECT_EQ(testing::backup_fds(dir_.path()), files);
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
  ASSERT_EQ(testing::backup_fds(dir_.path()).size(), 1u);
  ASSERT_EQ(::ftruncate(testing::backup_fds(dir_.path()).front(), kMiB), 0);
  try {
    engine_->resume("t");
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("truncated"), std::string::npos) << error.what();
  }
  EXPECT_EQ(sim_.physical_bytes(0), 0u);
  engine_->free(a);
  EXPECT_EQ(open_files(), 0u);
}

TEST_F(DiskBackupTest, FilesHaveNoNameSoNothingInTheDirectoryCanReplaceThem) {
  // Whoever can write the directory sees no backup file to swap: names the
  // old scheme used (pid + address, 64 variants) are taken by symlinks to
  // foreign data and by FIFOs, and neither pause nor resume notices them.
  const DevicePtr a = allocate(3 * kMiB + 5);
  testing::fill_pattern(a, 3 * kMiB + 5, 4);
  const std::string foreign = dir_.path() + "/foreign";
  {
    std::vector<std::uint8_t> junk(4 * kMiB, 0xEE);
    const int fd = ::open(foreign.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  for (int n = 0; n < 64; ++n) {
    char name[128];
    std::snprintf(name, sizeof name, "%s/tms-backup-%ld-%llx%s.bin", dir_.path().c_str(),
                  static_cast<long>(getpid()), static_cast<unsigned long long>(a),
                  n == 0 ? "" : ("-" + std::to_string(n)).c_str());
    if (n % 2 == 0) {
      ASSERT_EQ(::symlink(foreign.c_str(), name), 0);
    } else {
      ASSERT_EQ(::mkfifo(name, 0600), 0);
    }
  }
  const std::set<std::string> planted = dir_.files();
  engine_->pause("t");
  EXPECT_EQ(dir_.files(), planted) << "the backup has no name in the directory";
  EXPECT_EQ(open_files(), 1u);
  engine_->resume("t");  // would block on a FIFO or restore 0xEE through a symlink
  EXPECT_TRUE(testing::has_pattern(a, 3 * kMiB + 5, 4));
  engine_->free(a);
}

TEST_F(DiskBackupTest, WithoutUnnamedFilesNamesAreRandomAndUnlinkedAtOnce) {
  io_.set_refuse_unnamed_files(true);  // as on filesystems without O_TMPFILE
  const DevicePtr a = allocate(2 * kMiB + 1);
  const DevicePtr b = allocate(kMiB);
  testing::fill_pattern(a, 2 * kMiB + 1, 5);
  testing::fill_pattern(b, kMiB, 6);
  engine_->pause("t");
  EXPECT_TRUE(dir_.files().empty()) << "the names are gone right after creation";
  EXPECT_EQ(open_files(), 2u);
  EXPECT_EQ(io_.call_count(FileCall::kUnlink), 2u);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, 2 * kMiB + 1, 5));
  EXPECT_TRUE(testing::has_pattern(b, kMiB, 6));
  EXPECT_EQ(open_files(), 0u);
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, FileChangedWhilePausedIsDetectedNamedAndCanBeDiscarded) {
  const DevicePtr lost = allocate(2 * kMiB + 3, "t");
  const DevicePtr kept = allocate(kMiB, "t");
  const DevicePtr other = allocate(kMiB, "other", 1);
  testing::fill_pattern(lost, 2 * kMiB + 3, 7);
  testing::fill_pattern(kept, kMiB, 8);
  testing::fill_pattern(other, kMiB, 9);
  engine_->pause(std::nullopt);
  // Damage one byte of the larger file, through this process's descriptor
  // (the only way in besides root).
  bool damaged = false;
  for (const int fd : testing::backup_fds(dir_.path())) {
    struct stat info {};
    ASSERT_EQ(::fstat(fd, &info), 0);
    if (info.st_size != static_cast<off_t>(2 * kMiB + 4096)) continue;
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    const int writer = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(writer, 0);
    ASSERT_EQ(::pwrite(writer, "X", 1, static_cast<off_t>(kMiB + 17)), 1);
    ::close(writer);
    damaged = true;
  }
  ASSERT_TRUE(damaged);
  char address[32];
  std::snprintf(address, sizeof address, "0x%llx", static_cast<unsigned long long>(lost));
  for (int attempt = 0; attempt < 2; ++attempt) {  // it stays an error, not a one-off
    try {
      engine_->resume(std::nullopt);
      FAIL() << "expected IoError";
    } catch (const IoError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("checksum"), std::string::npos) << message;
      EXPECT_NE(message.find(address), std::string::npos) << "names the allocation: " << message;
      EXPECT_NE(message.find("tag 't'"), std::string::npos) << message;
      EXPECT_NE(message.find("discard_backup"), std::string::npos) << message;
    }
    EXPECT_EQ(sim_.physical_bytes(0) + sim_.physical_bytes(1), 0u) << "everything stays paused";
  }
  engine_->resume("other");  // other tags are not blocked
  EXPECT_TRUE(testing::has_pattern(other, kMiB, 9));
  EXPECT_THROW(engine_->discard_backup(other), InvalidState) << "active";
  int foreign = 0;
  EXPECT_THROW(engine_->discard_backup(reinterpret_cast<DevicePtr>(&foreign)), InvalidArgument);
  engine_->discard_backup(lost + 100);  // any address inside the allocation
  EXPECT_EQ(open_files(), 1u) << "the damaged file is gone";
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(kept, kMiB, 8)) << "the others are restored exactly";
  EXPECT_TRUE(testing::all_zero(lost, 2 * kMiB + 3)) << "without contents (zero on the simulation)";
  engine_->pause("t");  // and it works as before
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(kept, kMiB, 8));
  for (const DevicePtr ptr : {lost, kept, other}) engine_->free(ptr);
}

TEST_F(DiskBackupTest, NoHostMemoryForStagingAtResumeKeepsEverythingPaused) {
  const std::size_t size = 2 * kChunk + 11;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 3);
  engine_->pause("t");
  engine_->trim_host_memory();  // the staging buffer goes: resume must make it again
  sim_.fail_call(DriverCall::kHostAlloc, 1, InjectedFailure::kOutOfMemory);
  try {
    engine_->resume("t");
    ADD_FAILURE() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    EXPECT_NE(std::string(error.what()).find("everything stays paused"), std::string::npos)
        << error.what();
    // As 5000890 said it, and as the IoError of the same restore says it.
    EXPECT_EQ(std::string(error.what())
                  .rfind("out of memory in resume: resume of tag 't' could not restore the disk "
                         "backup of allocation ",
                         0),
              0u)
        << error.what();
  }
  EXPECT_EQ(sim_.physical_bytes(0), 0u) << "nothing left mapped";
  EXPECT_EQ(open_files(), 1u) << "the backup file is kept";
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 3));
  engine_->free(a);
}

TEST_F(DiskBackupTest, StagingIsSizedToTheWork) {
  EngineOptions options;
  options.disk.chunk_bytes = 64 * kMiB;
  options.file_io = &io_;
  engine_ = std::make_unique<Engine>(sim_, options);
  engine_->set_disk_backup_dir(dir_.path());
  const DevicePtr small = allocate(4096);
  testing::fill_pattern(small, 4096, 1);
  engine_->pause("t");
  EXPECT_EQ(sim_.host_bytes(), 4096u) << "not 5 x 64 MiB for a 4 KiB allocation";
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(small, 4096, 1));
  const DevicePtr larger = allocate(3 * kMiB + 1, "t2");
  testing::fill_pattern(larger, 3 * kMiB + 1, 2);
  engine_->pause("t2");
  EXPECT_EQ(sim_.host_bytes(), 3 * kMiB + 4096) << "grown to the larger allocation";
  engine_->resume("t2");
  EXPECT_TRUE(testing::has_pattern(larger, 3 * kMiB + 1, 2));
  engine_->free(small);
  engine_->free(larger);
}

TEST_F(DiskBackupTest, FileSizeLimitIsCheckedBeforeWriting) {
  // A C host gets SIGXFSZ from a write past RLIMIT_FSIZE; the pause must
  // refuse first with a typed error and leave everything active.
  const DevicePtr a = allocate(4 * kMiB);
  testing::fill_pattern(a, 4 * kMiB, 3);
  EXPECT_EXIT(
      {
        rlimit limit{};
        ::getrlimit(RLIMIT_FSIZE, &limit);
        limit.rlim_cur = kMiB;
        ::setrlimit(RLIMIT_FSIZE, &limit);
        int status = 1;
        try {
          engine_->pause("t");
        } catch (const IoError& error) {
          const std::string message = error.what();
          status = message.find("RLIMIT_FSIZE") != std::string::npos &&
                           sim_.physical_bytes(0) == 4 * kMiB && open_files() == 0 &&
                           testing::has_pattern(a, 4 * kMiB, 3)
                       ? 0
                       : 2;
        }
        std::_Exit(status);
      },
      ::testing::ExitedWithCode(0), "");
  engine_->free(a);
}

TEST_F(DiskBackupTest, UnsafeDirectoriesAreRefused) {
  testing::TempDir shared;
  ASSERT_EQ(::chmod(shared.path().c_str(), 0777), 0);
  try {
    engine_->set_disk_backup_dir(shared.path());
    FAIL() << "a world-writable directory without sticky bit was accepted";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("sticky"), std::string::npos) << error.what();
  }
  ASSERT_EQ(::chmod(shared.path().c_str(), 01777), 0);  // as /tmp: fine
  engine_->set_disk_backup_dir(shared.path());
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 2);
  ASSERT_EQ(::chmod(shared.path().c_str(), 0700), 0);
  ASSERT_EQ(::chown(shared.path().c_str(), 65534, 65534), 0) << "the tests run as root";
  try {
    engine_->set_disk_backup_dir(shared.path());
    FAIL() << "a directory of another user was accepted";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("belongs to user 65534"), std::string::npos)
        << error.what();
  }
  // Made unsafe after it was set: the pause refuses, everything stays active.
  EXPECT_THROW(engine_->pause("t"), IoError);
  EXPECT_EQ(sim_.physical_bytes(0), 2 * kMiB) << "still active (one granule)";
  // A symlink put in place of the directory is refused too.
  ASSERT_EQ(::chown(shared.path().c_str(), 0, 0), 0);
  const std::string moved = dir_.path() + "/moved";
  ASSERT_EQ(::rename(shared.path().c_str(), moved.c_str()), 0);
  ASSERT_EQ(::symlink(moved.c_str(), shared.path().c_str()), 0);
  try {
    engine_->pause("t");
    FAIL() << "a symlink in place of the directory was followed";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("symbolic link"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 2));
  ::unlink(shared.path().c_str());
  ASSERT_EQ(::rename(moved.c_str(), shared.path().c_str()), 0);
  engine_->free(a);
}

TEST_F(DiskBackupTest, MissingDirectoryIsCreatedPrivateAndRelativeOnesBecomeAbsolute) {
  const std::string old_cwd =
      std::unique_ptr<char, decltype(&std::free)>(::getcwd(nullptr, 0), &std::free).get();
  ASSERT_EQ(::chdir(dir_.path().c_str()), 0);
  engine_->set_disk_backup_dir("made/by/set");
  const std::string expected = dir_.path() + "/made/by/set";
  EXPECT_EQ(engine_->disk_backup_dir(), expected);
  struct stat info {};
  ASSERT_EQ(::stat(expected.c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 5);
  ASSERT_EQ(::chdir("/"), 0);  // a later chdir changes nothing
  engine_->pause("t");
  EXPECT_EQ(testing::backup_fds(expected).size(), 1u);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 5));
  engine_->free(a);
  ASSERT_EQ(::chdir(old_cwd.c_str()), 0);
  const std::string a_file = dir_.path() + "/a-file";
  std::fclose(std::fopen(a_file.c_str(), "w"));
  EXPECT_THROW(engine_->set_disk_backup_dir(a_file), IoError);
  EXPECT_THROW(engine_->set_disk_backup_dir(a_file + "/below"), IoError);
  EXPECT_EQ(engine_->disk_backup_dir(), expected) << "unchanged after a refusal";
  ::unlink(a_file.c_str());
  ::rmdir(expected.c_str());
  ::rmdir((dir_.path() + "/made/by").c_str());
  ::rmdir((dir_.path() + "/made").c_str());
}

TEST_F(DiskBackupTest, FailedUnlinkOfANamedFileIsRetriedLater) {
  io_.set_refuse_unnamed_files(true);
  const DevicePtr a = allocate(kMiB);
  testing::fill_pattern(a, kMiB, 6);
  io_.fail_call(FileCall::kUnlink, 1, EBUSY);
  io_.fail_call(FileCall::kUnlink, 2, EBUSY);
  engine_->pause("t");  // the name stays for now; the data never needed it
  EXPECT_EQ(dir_.files().size(), 1u);
  EXPECT_EQ(engine_->stats().deferred_releases, 1u);
  engine_->resume("t");  // any operation retries
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 6));
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
  EXPECT_EQ(open_files(), 1u);
  EXPECT_EQ(testing::backup_fds(second.path()).size(), 1u);
  engine_->resume("t");
  EXPECT_EQ(open_files(), 0u);
  EXPECT_TRUE(testing::backup_fds(second.path()).empty());
  EXPECT_TRUE(testing::has_pattern(a, kMiB, 7));
  EXPECT_TRUE(testing::has_pattern(b, kMiB, 8));
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, SeveralTransfersOfOneFileAreInFlightAtOnce) {
  const std::size_t size = 12 * kChunk + 5;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 9);
  probe_.hold(kWriteDepth);  // only reached if that many writes run together
  engine_->pause("t");
  EXPECT_EQ(probe_.most_in_flight(), kWriteDepth) << "writes in flight, never more";
  probe_.hold(kReadDepth);
  engine_->resume("t");
  EXPECT_EQ(probe_.most_in_flight(), kReadDepth) << "reads in flight, never more";
  EXPECT_TRUE(testing::has_pattern(a, size, 9));
  engine_->free(a);
}

TEST_F(DiskBackupTest, AnyDepthRoundTripsExactly) {
  for (const auto& [writes, reads] : {std::pair<std::size_t, std::size_t>{1, 1}, {2, 5}, {7, 3}}) {
    SCOPED_TRACE("write depth " + std::to_string(writes) + ", read depth " + std::to_string(reads));
    DiskBackupOptions disk;
    disk.write_depth = writes;
    disk.read_depth = reads;
    make_engine(disk);
    const std::vector<std::size_t> sizes = {4097, 2 * kChunk, 9 * kChunk + 1, 13 * kChunk - 7};
    std::vector<DevicePtr> ptrs;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      ptrs.push_back(allocate(sizes[i], "t", static_cast<int>(i % 2)));
      testing::fill_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(20 + i));
    }
    probe_.hold(0);
    engine_->pause("t");
    EXPECT_LE(probe_.most_in_flight(), writes);
    EXPECT_EQ(sim_.host_bytes(), (std::max(writes, reads) + 1) * kChunk);
    probe_.hold(0);
    engine_->resume("t");
    EXPECT_LE(probe_.most_in_flight(), reads);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_TRUE(testing::has_pattern(ptrs[i], sizes[i], static_cast<std::uint8_t>(20 + i)))
          << "size " << sizes[i];
      engine_->free(ptrs[i]);
    }
  }
  DiskBackupOptions none;
  none.read_depth = 0;
  EXPECT_THROW(make_engine(none), InvalidArgument);
}

TEST_F(DiskBackupTest, AnyWriteFailingWhileOthersAreInFlightLeavesNothingBehind) {
  const std::size_t size = 9 * kChunk + 777;  // 10 writes
  const DevicePtr a = allocate(size);
  const DevicePtr b = allocate(kChunk, "t", 1, /*disk=*/false, /*cpu=*/true);
  testing::fill_pattern(a, size, 1);
  testing::fill_pattern(b, kChunk, 2);
  const std::size_t writes = 10;
  for (std::size_t nth = 1; nth <= writes; ++nth) {
    SCOPED_TRACE("write " + std::to_string(nth) + " fails");
    probe_.hold(kWriteDepth);
    io_.fail_call(FileCall::kPwrite, static_cast<int>(nth), EIO);
    expect_io_error([&] { engine_->pause("t"); }, "pwrite: Input/output error");
    EXPECT_EQ(probe_.in_flight(), 0u) << "every write ended before the error left";
    EXPECT_EQ(open_files(), 0u) << "the partial file is gone";
    EXPECT_TRUE(dir_.files().empty());
    EXPECT_EQ(sim_.physical_bytes(0), 10 * kMiB) << "still active";
    EXPECT_TRUE(testing::has_pattern(a, size, 1));
    EXPECT_TRUE(testing::has_pattern(b, kChunk, 2));
    io_.clear_failures();
  }
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 1));
  EXPECT_TRUE(testing::has_pattern(b, kChunk, 2));
  engine_->free(a);
  engine_->free(b);
}

TEST_F(DiskBackupTest, AnyReadFailingWhileOthersAreInFlightKeepsEverythingPaused) {
  const std::size_t size = 9 * kChunk + 777;  // 10 reads
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 3);
  engine_->pause("t");
  const std::vector<int> files = testing::backup_fds(dir_.path());
  ASSERT_EQ(files.size(), 1u);
  for (std::size_t nth = 1; nth <= 10; ++nth) {
    SCOPED_TRACE("read " + std::to_string(nth) + " fails");
    probe_.hold(kReadDepth);
    io_.fail_call(FileCall::kPread, static_cast<int>(nth), EIO);
    expect_io_error([&] { engine_->resume("t"); }, "pread: Input/output error");
    EXPECT_EQ(probe_.in_flight(), 0u) << "every read ended before the error left";
    EXPECT_EQ(testing::backup_fds(dir_.path()), files) << "the file is kept";
    EXPECT_EQ(sim_.physical_bytes(0), 0u) << "still paused";
    io_.clear_failures();
  }
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 3));
  EXPECT_EQ(open_files(), 0u);
  engine_->free(a);
}

TEST_F(DiskBackupTest, InterruptedCallsAreRetried) {
  const std::size_t size = 6 * kChunk + 1;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 4);
  io_.fail_call(FileCall::kFallocate, 1, EINTR);
  io_.fail_call(FileCall::kPwrite, 2, EINTR);
  io_.fail_call(FileCall::kPwrite, 5, EINTR);
  io_.fail_call(FileCall::kPread, 1, EINTR);
  io_.fail_call(FileCall::kPread, 6, EINTR);
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 4));
  io_.clear_failures();
  io_.set_refuse_direct_io(true);
  io_.fail_call(FileCall::kSyncRange, 3, EINTR);
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 4));
  engine_->free(a);
}

TEST_F(DiskBackupTest, ResumeReturnsWithoutWaitingForTheFilesystemToFreeTheFile) {
  // Closing a restored file is when the filesystem frees its blocks, which
  // can take as long as a part of the read: resume hands that to a thread.
  const std::size_t size = 3 * kChunk + 5;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 6);
  engine_->pause("t");
  probe_.shut_closes(true);
  auto resumed = std::async(std::launch::async, [&] { engine_->resume("t"); });
  const bool returned = resumed.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "resume waited for its backup file to be closed";
  EXPECT_EQ(testing::backup_fds(dir_.path()).size(), returned ? 1u : 0u)
      << "the file is closed in the background";
  probe_.shut_closes(false);
  resumed.get();
  EXPECT_TRUE(testing::has_pattern(a, size, 6));
  EXPECT_EQ(open_files(), 0u) << "and closed once the closes run";
  engine_->free(a);
}

TEST_F(DiskBackupTest, APauseShortOfSpaceOrDescriptorsWaitsForFilesStillClosing) {
  // A resumed file's space and descriptor come back when it is closed. Every
  // paused disk backup holds a descriptor, so a pause right after a resume
  // can need as many as the resume's files, still closing, hold.
  using Shortage = TransferProbe::Shortage;
  for (const Shortage shortage :
       {Shortage::kSpace, Shortage::kSpaceWithoutFallocate, Shortage::kDescriptors}) {
    SCOPED_TRACE("shortage " + std::to_string(static_cast<int>(shortage)));
    const std::size_t size = 2 * kChunk + 77;
    const DevicePtr a = allocate(size, "a");
    const DevicePtr b = allocate(size, "b");
    testing::fill_pattern(a, size, 7);
    testing::fill_pattern(b, size, 8);
    engine_->pause("a");
    probe_.shut_closes(true);
    probe_.short_until_closed(shortage);
    engine_->resume("a");  // a's file is still open
    engine_->pause("b");   // short at first, then not once a's file is closed
    EXPECT_EQ(open_files(), 1u) << "b's file only";
    engine_->resume("b");
    EXPECT_TRUE(testing::has_pattern(a, size, 7));
    EXPECT_TRUE(testing::has_pattern(b, size, 8));
    engine_->free(a);
    engine_->free(b);
    EXPECT_EQ(open_files(), 0u);
    probe_.short_until_closed(Shortage::kNone);
  }
}

TEST_F(DiskBackupTest, OutOfDescriptorsSaysToRaiseTheLimitNotToChangeTheDirectory) {
  const DevicePtr a = allocate(kChunk + 3);
  testing::fill_pattern(a, kChunk + 3, 9);
  io_.fail_call(FileCall::kOpen, 1, EMFILE);  // the pause's first open: the directory
  try {
    engine_->pause("t");
    ADD_FAILURE() << "expected IoError";
  } catch (const IoError& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("ulimit -n"), std::string::npos) << text;
    EXPECT_EQ(text.find("choose another"), std::string::npos) << text;
  }
  EXPECT_EQ(open_files(), 0u);
  engine_->pause("t");  // descriptors back: it works
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, kChunk + 3, 9));
  engine_->free(a);
}

TEST_F(DiskBackupTest, SpaceIsReservedBeforeWriting) {
  const std::size_t size = 3 * kChunk + 9;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 5);
  io_.fail_call(FileCall::kFallocate, 1, ENOSPC);
  const std::size_t writes = io_.call_count(FileCall::kPwrite);
  expect_io_error([&] { engine_->pause("t"); }, "fallocate: No space left");
  io_.fail_call(FileCall::kFallocate, 1, ENOSPC);
  expect_io_error([&] { engine_->pause("t"); }, "TMS_DISK_BACKUP_DIR");  // the hint
  EXPECT_EQ(io_.call_count(FileCall::kPwrite), writes) << "nothing written";
  EXPECT_EQ(open_files(), 0u);
  EXPECT_EQ(sim_.physical_bytes(0), 4 * kMiB);
  // A filesystem without fallocate: the writes extend the file instead.
  io_.fail_call(FileCall::kFallocate, 1, EOPNOTSUPP);
  engine_->pause("t");
  for (const int fd : testing::backup_fds(dir_.path())) {
    struct stat info {};
    ASSERT_EQ(::fstat(fd, &info), 0);
    EXPECT_EQ(info.st_size, static_cast<off_t>(3 * kChunk + 4096));
  }
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 5));
  engine_->free(a);
}

TEST_F(DiskBackupTest, BackupsDoNotStayInThePageCache) {
  const std::string dir = disk_backed_dir();
  if (dir.empty()) GTEST_SKIP() << "no disk-backed directory to test in";
  engine_->set_disk_backup_dir(dir);
  const std::size_t size = 7 * kChunk + 3;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 6);
  for (const bool refuse_direct : {false, true}) {
    SCOPED_TRACE(refuse_direct ? "buffered" : "direct");
    io_.set_refuse_direct_io(refuse_direct);
    const std::size_t syncs = io_.call_count(FileCall::kSyncRange);
    const std::size_t drops = io_.call_count(FileCall::kDropCached);
    engine_->pause("t");
    const std::vector<int> fds = testing::backup_fds(dir);
    ASSERT_EQ(fds.size(), 1u);
    EXPECT_EQ(cached_pages(fds.front()), 0u) << "nothing of the backup is left in the cache";
    engine_->resume("t");
    EXPECT_TRUE(testing::has_pattern(a, size, 6));
    // Without O_DIRECT each block is written back and dropped, and dropped
    // again after it is read.
    EXPECT_EQ(io_.call_count(FileCall::kSyncRange) - syncs, refuse_direct ? 8u : 0u);
    EXPECT_EQ(io_.call_count(FileCall::kDropCached) - drops, refuse_direct ? 16u : 0u);
  }
  engine_->free(a);
}

TEST_F(DiskBackupTest, BufferedWriteBackFailuresFailThePauseAndDroppingIsOnlyAdvice) {
  io_.set_refuse_direct_io(true);
  const std::size_t size = 4 * kChunk + 11;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 7);
  // Write-back failed: the data may not be in the file.
  io_.fail_call(FileCall::kSyncRange, 3, EIO);
  expect_io_error([&] { engine_->pause("t"); }, "sync_file_range: Input/output error");
  EXPECT_EQ(open_files(), 0u);
  EXPECT_TRUE(testing::has_pattern(a, size, 7));
  // No sync_file_range here (a sandbox), or the cache refuses the advice:
  // the backup works, only cached.
  io_.fail_call(FileCall::kSyncRange, 2, ENOSYS);
  io_.fail_call(FileCall::kDropCached, 1, EINVAL);
  io_.fail_call(FileCall::kDropCached, 9, EIO);  // on the read side
  engine_->pause("t");
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 7));
  engine_->free(a);
}

// Some FUSE and network filesystems (and older tmpfs variants) take
// O_DIRECT at open() and refuse the transfers themselves with EINVAL.
TEST_F(DiskBackupTest, DirectWritesRefusedAfterOpenGoThroughThePageCacheInstead) {
  const std::string dir = disk_backed_dir();
  if (dir.empty()) GTEST_SKIP() << "no disk-backed directory to test in";
  engine_->set_disk_backup_dir(dir);
  io_.set_refuse_direct_transfers(true);
  const std::size_t size = 7 * kChunk + 3;  // 8 blocks
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 9);
  const std::size_t writes = io_.call_count(FileCall::kPwrite);
  probe_.hold(kWriteDepth);  // the first writes are all in flight, and all refused
  engine_->pause("t");
  EXPECT_EQ(io_.call_count(FileCall::kClearDirect), 1u)
      << "one switch for the file, whichever write was refused first";
  EXPECT_EQ(io_.call_count(FileCall::kPwrite) - writes, 8u + kWriteDepth)
      << "each refused write again, buffered; the later ones buffered at once";
  const std::vector<int> fds = testing::backup_fds(dir);
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(::fcntl(fds.front(), F_GETFL) & O_DIRECT, 0) << "the descriptor is buffered now";
  EXPECT_EQ(cached_pages(fds.front()), 0u) << "written back and dropped, as buffered backups";
  EXPECT_EQ(io_.call_count(FileCall::kSyncRange), 8u);
  EXPECT_EQ(io_.call_count(FileCall::kDropCached), 8u);
  const std::size_t reads = io_.call_count(FileCall::kPread);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 9));
  EXPECT_EQ(io_.call_count(FileCall::kPread) - reads, 8u) << "read buffered at once";
  EXPECT_EQ(io_.call_count(FileCall::kDropCached), 16u) << "each read block dropped";
  EXPECT_EQ(io_.call_count(FileCall::kClearDirect), 1u);
  engine_->free(a);
}

TEST_F(DiskBackupTest, DirectReadsRefusedAfterOpenGoThroughThePageCacheInstead) {
  const std::string dir = disk_backed_dir();
  if (dir.empty()) GTEST_SKIP() << "no disk-backed directory to test in";
  engine_->set_disk_backup_dir(dir);
  const std::size_t size = 7 * kChunk + 3;
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 10);
  engine_->pause("t");  // written directly
  EXPECT_EQ(io_.call_count(FileCall::kDropCached), 0u);
  io_.set_refuse_direct_transfers(true);
  const std::size_t reads = io_.call_count(FileCall::kPread);
  probe_.hold(kReadDepth);
  engine_->resume("t");
  EXPECT_TRUE(testing::has_pattern(a, size, 10)) << "blocks written directly read back buffered";
  EXPECT_EQ(io_.call_count(FileCall::kClearDirect), 1u);
  EXPECT_EQ(io_.call_count(FileCall::kPread) - reads, 8u + kReadDepth);
  EXPECT_EQ(io_.call_count(FileCall::kDropCached), 8u) << "each read block dropped";
  engine_->free(a);
}

TEST_F(DiskBackupTest, ADirectWriteRefusedPartWayKeepsTheBlocksWrittenBefore) {
  const std::string dir = disk_backed_dir();
  if (dir.empty()) GTEST_SKIP() << "no disk-backed directory to test in";
  engine_->set_disk_backup_dir(dir);
  const std::size_t size = 9 * kChunk + 5;  // 10 blocks
  const DevicePtr a = allocate(size);
  testing::fill_pattern(a, size, 11);
  for (int nth = 1; nth <= 10; ++nth) {
    SCOPED_TRACE("write " + std::to_string(nth) + " refused");
    io_.fail_call(FileCall::kPwrite, nth, EINVAL);  // each pause opens a new file with O_DIRECT
    const std::size_t switches = io_.call_count(FileCall::kClearDirect);
    engine_->pause("t");
    EXPECT_EQ(io_.call_count(FileCall::kClearDirect) - switches, 1u);
    const std::vector<int> fds = testing::backup_fds(dir);
    ASSERT_EQ(fds.size(), 1u);
    EXPECT_EQ(::fcntl(fds.front(), F_GETFL) & O_DIRECT, 0);
    EXPECT_EQ(cached_pages(fds.front()), 0u);
    engine_->resume("t");
    EXPECT_TRUE(testing::has_pattern(a, size, 11));
  }
  engine_->free(a);
}

TEST_F(DiskBackupTest, DirectTransfersRefusedAndTheFlagNotClearableIsATypedError) {
  io_.set_refuse_direct_transfers(true);
  const std::size_t size = 5 * kChunk + 1;
  const DevicePtr a = allocate(size);
  const DevicePtr b = allocate(kChunk, "t", 1, /*disk=*/false, /*cpu=*/true);
  testing::fill_pattern(a, size, 12);
  testing::fill_pattern(b, kChunk, 13);
  io_.fail_call(FileCall::kClearDirect, 1, EPERM);
  probe_.hold(kWriteDepth);
  expect_io_error([&] { engine_->pause("t"); }, "pwrite: Invalid argument");
  io_.fail_call(FileCall::kClearDirect, 1, EPERM);
  expect_io_error([&] { engine_->pause("t"); }, "fcntl: Operation not permitted");
  EXPECT_EQ(io_.call_count(FileCall::kClearDirect), 2u) << "tried once per pause";
  EXPECT_EQ(probe_.in_flight(), 0u);
  EXPECT_EQ(open_files(), 0u) << "the partial file is gone";
  EXPECT_TRUE(dir_.files().empty());
  EXPECT_EQ(sim_.physical_bytes(0), 6 * kMiB) << "still active";
  EXPECT_TRUE(testing::has_pattern(a, size, 12));
  EXPECT_TRUE(testing::has_pattern(b, kChunk, 13));

  // Resume: a file written directly whose reads are then refused.
  io_.set_refuse_direct_transfers(false);
  engine_->pause("t");
  const std::vector<int> files = testing::backup_fds(dir_.path());
  ASSERT_EQ(files.size(), 1u);
  io_.set_refuse_direct_transfers(true);
  io_.fail_call(FileCall::kClearDirect, 1, EPERM);
  expect_io_error([&] { engine_->resume("t"); }, "pread: Invalid argument");
  EXPECT_EQ(testing::backup_fds(dir_.path()), files) << "the file is kept";
  EXPECT_EQ(sim_.physical_bytes(0), 0u) << "still paused";
  EXPECT_NE(engine_->backup_pointer(b, 64), nullptr);
  engine_->resume("t");  // the switch works this time
  EXPECT_TRUE(testing::has_pattern(a, size, 12));
  EXPECT_TRUE(testing::has_pattern(b, kChunk, 13));
  EXPECT_EQ(open_files(), 0u);
  engine_->free(a);
  engine_->free(b);
}

}  // namespace
}  // namespace tms
