// Helpers for the disk backup tests: a scratch directory, its listing and
// the (unnamed) backup files open in this process.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace tms::testing {

/// A fresh directory under $TMPDIR (or /tmp), removed with its files.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tms-disk-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    for (const std::string& name : files()) ::unlink((path_ + "/" + name).c_str());
    ::rmdir(path_.c_str());
  }

  [[nodiscard]] const std::string& path() const { return path_; }

  /// Names of the entries in the directory (not . and ..).
  [[nodiscard]] std::set<std::string> files() const {
    std::set<std::string> names;
    DIR* dir = ::opendir(path_.c_str());
    if (dir == nullptr) return names;
    while (const dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") names.insert(name);
    }
    ::closedir(dir);
    return names;
  }

 private:
  std::string path_;
};

/// Descriptors of this process open on files in `dir`: the backup files,
/// which have no name there ("/dir/#12345 (deleted)" or "/dir/name (deleted)").
inline std::vector<int> backup_fds(const std::string& dir) {
  std::vector<int> fds;
  DIR* listing = ::opendir("/proc/self/fd");
  if (listing == nullptr) return fds;
  while (const dirent* entry = ::readdir(listing)) {
    char target[4096];
    const std::string link = std::string("/proc/self/fd/") + entry->d_name;
    const ssize_t length = ::readlink(link.c_str(), target, sizeof target - 1);
    if (length <= 0) continue;
    target[length] = '\0';
    // Directly in `dir` (not below it), and without a name.
    const std::string file = target;
    const std::string suffix = " (deleted)";
    if (file.size() > suffix.size() &&
        file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        file.rfind(dir + "/", 0) == 0 && file.find('/', dir.size() + 1) == std::string::npos) {
      fds.push_back(std::atoi(entry->d_name));
    }
  }
  ::closedir(listing);
  return fds;
}

inline std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace tms::testing
