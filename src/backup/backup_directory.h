// The disk backup directory: the one place that creates it, decides whether
// it is safe to use, names the files made in it, and removes what dead
// processes left there.
//
// Safe means: a directory (opened without following a final symlink and
// without blocking, so a FIFO or device at that path is refused rather than
// waited on), owned by this process's user or root, not writable by other
// users unless it has the sticky bit (as /tmp), and writable by us. Backup
// files themselves are unnamed (O_TMPFILE) or unlinked right after they are
// created, so this protects the moment of creation; the data is read back
// through the descriptor that wrote it.
//
// Named files (filesystems without O_TMPFILE) are called
// tms-backup-<pid>-<process start time>-<random>.tmp: unpredictable, and a
// later process can tell from pid and start time whether their owner still
// runs (remove_orphaned_backups), should one be left by a SIGKILL in the
// instant between creating and unlinking it.
#pragma once

#include <cstddef>
#include <string>

#include "io/file_io.h"

namespace tms {

/// Makes `dir` absolute (against the current directory), creates it and
/// its missing parents with mode 0700, and checks that it is safe.
/// @returns the absolute path, without trailing slashes.
/// @throws InvalidArgument for an empty path, IoError naming the directory
/// and what is wrong with it.
std::string prepare_backup_directory(FileIo& io, const std::string& dir);

/// Opens `dir` and checks that it is safe (see above).
/// @returns a descriptor of the directory; the caller closes it.
/// @throws IoError naming the directory and what is wrong with it.
int open_backup_directory(FileIo& io, const std::string& dir);

/// A fresh, unpredictable name for a named backup file of this process.
std::string new_backup_file_name();

/// Removes named backup files in `dir` whose process no longer runs (its
/// pid is gone or belongs to a process started at another time). Files of
/// running processes, other users' files and other entries are left alone.
/// @returns how many files it removed. @throws IoError as
/// open_backup_directory, or when an orphan cannot be removed.
std::size_t remove_orphaned_backups(FileIo& io, const std::string& dir);

}  // namespace tms
