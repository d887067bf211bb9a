#include "backup/backup_directory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "common/errors.h"

namespace tms {
namespace {

constexpr const char* kPrefix = "tms-backup-";
constexpr const char* kSuffix = ".tmp";

std::string errno_text(int error) { return std::strerror(error); }

[[noreturn]] void refuse(const std::string& dir, const std::string& reason) {
  throw IoError("disk backup directory '" + dir + "' is not usable: " + reason +
                "; choose another with TMS_DISK_BACKUP_DIR or set_disk_backup_dir");
}

/// Start time of process `pid` (clock ticks after boot, /proc/<pid>/stat
/// field 22), or nullopt when no such process runs.
std::optional<unsigned long long> process_start_time(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields are
  // counted from the last ')'.
  const std::size_t end = line.rfind(')');
  if (end == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(end + 1));
  std::string field;
  for (int number = 3; fields >> field; ++number) {
    if (number == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return std::nullopt;
}

unsigned long long own_start_time() {
  static const unsigned long long start = process_start_time(getpid()).value_or(0);
  return start;
}

/// pid and start time from "tms-backup-<pid>-<start>-<16 hex digits>.tmp".
bool parse_name(const std::string& name, long& pid, unsigned long long& start) {
  unsigned long long random = 0;
  int consumed = 0;
  if (std::sscanf(name.c_str(), "tms-backup-%ld-%llu-%16llx.tmp%n", &pid, &start, &random,
                  &consumed) != 3) {
    return false;
  }
  return static_cast<std::size_t>(consumed) == name.size() && pid > 0;
}

/// Closes a directory descriptor on every path out.
struct DirFd {
  FileIo& io;
  int fd;
  ~DirFd() {
    if (fd >= 0) io.close(fd);
  }
};

}  // namespace

int open_backup_directory(FileIo& io, const std::string& dir) {
  const int fd = io.open(AT_FDCWD, dir.c_str(),
                         O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) {
    const int error = errno;
    // Out of descriptors: the directory is fine, the process is at its limit.
    if (error == EMFILE || error == ENFILE) {
      throw IoError("could not open disk backup directory '" + dir + "': " + errno_text(error) +
                    "; every paused disk backup holds a file descriptor: raise the limit "
                    "(ulimit -n) or use fewer, larger allocations");
    }
    refuse(dir, error == ENOENT ? "it does not exist"
                : error == ENOTDIR || error == ELOOP
                    ? "it is not a directory (or is a symbolic link)"
                    : "open: " + errno_text(error));
  }
  DirFd guard{io, fd};
  struct stat info {};
  if (io.fstat(fd, &info) != 0) refuse(dir, "fstat: " + errno_text(errno));
  if (!S_ISDIR(info.st_mode)) refuse(dir, "it is not a directory");
  const uid_t user = geteuid();
  if (info.st_uid != user && info.st_uid != 0) {
    refuse(dir, "it belongs to user " + std::to_string(info.st_uid) +
                    ", not to this process's user " + std::to_string(user) +
                    " (who could replace or read backup files there)");
  }
  if ((info.st_mode & S_IWOTH) != 0 && (info.st_mode & S_ISVTX) == 0) {
    refuse(dir,
           "any user may write it and it has no sticky bit (others could replace backup files); "
           "use a directory only you can write (chmod 700) or set the sticky bit (chmod +t)");
  }
  if (io.access(fd, ".", W_OK | X_OK) != 0) {
    refuse(dir, "it is not writable (access: " + errno_text(errno) + ")");
  }
  guard.fd = -1;
  return fd;
}

std::string prepare_backup_directory(FileIo& io, const std::string& dir) {
  if (dir.empty()) throw InvalidArgument("disk backup directory must not be empty");
  std::string path = dir;
  if (path.front() != '/') {
    // Relative to the directory current now: a later chdir must not move it.
    std::unique_ptr<char, decltype(&std::free)> cwd(::getcwd(nullptr, 0), &std::free);
    if (cwd == nullptr) refuse(dir, "the current directory is unknown: " + errno_text(errno));
    path = std::string(cwd.get()) + "/" + path;
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  // Create what is missing, parents first, readable by this user only.
  for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (io.mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      const int error = errno;
      // Existing parents we may not write are fine; a missing part is not.
      if (error != EACCES && error != EPERM && error != EROFS) {
        refuse(path, "creating '" + prefix + "' failed: " + errno_text(error));
      }
    }
    if (slash == std::string::npos) break;
  }
  // Symbolic links are resolved now, so that a link put in place of the
  // directory later is refused (it is opened with O_NOFOLLOW).
  std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr), &std::free);
  if (real == nullptr) refuse(path, "realpath: " + errno_text(errno));
  path = real.get();
  io.close(open_backup_directory(io, path));
  return path;
}

std::string new_backup_file_name() {
  unsigned long long random = 0;
  // The system call, not glibc's getrandom() wrapper (glibc 2.25+): the
  // portable wheel targets glibc 2.17.
  if (syscall(SYS_getrandom, &random, sizeof random, 0) != static_cast<long>(sizeof random)) {
    // No entropy source: still unique (the address of a local varies with ASLR).
    random = static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(&random)) ^
             static_cast<unsigned long long>(::time(nullptr));
  }
  char name[96];
  std::snprintf(name, sizeof name, "%s%ld-%llu-%016llx%s", kPrefix, static_cast<long>(getpid()),
                own_start_time(), random, kSuffix);
  return name;
}

std::size_t remove_orphaned_backups(FileIo& io, const std::string& dir) {
  const int fd = open_backup_directory(io, dir);
  // fdopendir takes the descriptor over; a second one keeps ours for unlinkat.
  const int listing_fd = ::dup(fd);
  DirFd guard{io, fd};
  DIR* listing = listing_fd < 0 ? nullptr : ::fdopendir(listing_fd);
  if (listing == nullptr) {
    if (listing_fd >= 0) ::close(listing_fd);
    refuse(dir, "it cannot be listed: " + errno_text(errno));
  }
  struct CloseListing {
    void operator()(DIR* opened) const { ::closedir(opened); }
  };
  const std::unique_ptr<DIR, CloseListing> close_listing(listing);
  const uid_t user = geteuid();
  std::size_t removed = 0;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string name = entry->d_name;
    long pid = 0;
    unsigned long long start = 0;
    if (!parse_name(name, pid, start)) continue;
    struct stat info {};
    if (::fstatat(fd, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(info.st_mode) ||
        info.st_uid != user) {
      continue;
    }
    if (process_start_time(pid) == start) continue;  // its process still runs
    if (io.unlink(fd, name.c_str()) != 0 && errno != ENOENT) {
      throw IoError("could not remove orphaned disk backup file '" + dir + "/" + name +
                    "': unlink: " + errno_text(errno));
    }
    ++removed;
  }
  return removed;
}

}  // namespace tms
