// The CPU backup backends a region chooses between ("pinned", "mmap"): both
// keep the backup in page-locked blocks of anonymous memory (host_memory.h);
// they differ in what happens to a block once its backups are released.
#pragma once

namespace tms {

enum class HostMemoryKind {
  kPinned,  ///< kept in a pool for the next pause while retain_cpu_backup is on
  kMmap,    ///< always unregistered and unmapped: the memory goes back to the OS
};

}  // namespace tms
