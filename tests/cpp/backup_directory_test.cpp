// Orphaned backup files: what a killed process left is recognised by pid
// and start time and removed; files of running processes are not. And the
// checksum that guards backup files.
#include "backup/backup_directory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backup/checksum.h"
#include "common/errors.h"
#include "disk_test_support.h"

namespace tms {
namespace {

std::string start_time_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 1));
  std::string field;
  for (int number = 3; fields >> field; ++number) {
    if (number == 22) return field;
  }
  return "";
}

void touch(const std::string& path) { std::fclose(std::fopen(path.c_str(), "w")); }

TEST(OrphanedBackups, OnlyFilesOfProcessesThatNoLongerRunAreRemoved) {
  testing::TempDir dir;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // a pid that no longer runs

  const std::string ours = new_backup_file_name();
  const std::string mine = std::to_string(::getpid());
  const std::string dead = "tms-backup-" + std::to_string(child) + "-123-00000000deadbeef.tmp";
  // Our pid with another start time: a process that had our pid before us.
  const std::string reused = "tms-backup-" + mine + "-1-0123456789abcdef.tmp";
  const std::string foreign = "unrelated.tmp";
  const std::string old_style = "tms-backup-" + std::to_string(child) + "-7f00.bin";
  EXPECT_EQ(ours.rfind("tms-backup-" + mine + "-" + start_time_of(::getpid()) + "-", 0), 0u)
      << ours;
  EXPECT_NE(new_backup_file_name(), ours) << "names are random";
  for (const std::string& name : {ours, dead, reused, foreign, old_style}) {
    touch(dir.path() + "/" + name);
  }
  ASSERT_EQ(::symlink("/etc/passwd", (dir.path() + "/tms-backup-" + std::to_string(child) +
                                      "-5-0000000000000001.tmp")
                                         .c_str()),
            0);
  FileIo& io = posix_file_io();
  EXPECT_EQ(remove_orphaned_backups(io, dir.path()), 2u);
  const std::set<std::string> left = dir.files();
  EXPECT_EQ(left.count(ours), 1u) << "a running process's file stays";
  EXPECT_EQ(left.count(dead), 0u);
  EXPECT_EQ(left.count(reused), 0u);
  EXPECT_EQ(left.count(foreign), 1u);
  EXPECT_EQ(left.count(old_style), 1u);
  EXPECT_EQ(left.size(), 4u) << "symlinks are not touched";
  EXPECT_EQ(remove_orphaned_backups(io, dir.path()), 0u);
  EXPECT_THROW(remove_orphaned_backups(io, dir.path() + "/missing"), IoError);
}

TEST(Checksum, DetectsAnyChangedByteAndIsTheSameInOnePieceOrSeveral) {
  std::vector<std::uint8_t> data(3 << 20);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 131 + 7);
  Checksum whole;
  whole.update(data.data(), data.size());
  Checksum pieces;
  pieces.update(data.data(), 2 << 20);
  pieces.update(data.data() + (2 << 20), 1 << 20);
  EXPECT_EQ(pieces.digest(), whole.digest());
  for (const std::size_t at : {std::size_t{0}, std::size_t{31}, data.size() / 2, data.size() - 1}) {
    data[at] ^= 1;
    Checksum changed;
    changed.update(data.data(), data.size());
    EXPECT_NE(changed.digest(), whole.digest()) << "byte " << at;
    data[at] ^= 1;
  }
  Checksum shorter;
  shorter.update(data.data(), data.size() - 32);
  EXPECT_NE(shorter.digest(), whole.digest());
}

}  // namespace
}  // namespace tms
