// The calling thread's state behind the C ABI: its region settings and the
// status and message of its last failed call.
//
// Calls arrive while a thread exits, too: CUDA runtimes free memory from
// pthread-key destructors, which glibc runs after the C++ thread_local
// destructors. So the state is no thread_local object. It lives on the heap,
// reached through a trivially destructible thread_local pointer, and a
// pthread-key destructor of our own frees it. A call after that destructor
// ran makes a fresh state (with the process defaults), which the next round
// of destructors frees.
#pragma once

#include <string>

#include "backup/backup_policy.h"
#include "torch_memory_saver/tms.h"

namespace tms {

/// Settings that apply to the allocations the calling thread makes.
struct ThreadRegion {
  bool interesting = false;  ///< allocations go to the engine
  std::string tag = "default";
  BackupPolicy policy;
};

struct ThreadState {
  ThreadRegion region;
  int error_status = TMS_OK;
  std::string error_message;
};

/// The process defaults of a new thread, from the TMS_INIT_* variables
/// (runtime.cpp; plain defaults when they do not parse).
ThreadRegion default_thread_region();
/// Host memory of a host backup that names none: TMS_INIT_CPU_BACKUP_BACKEND
/// (pinned when unset or when the environment does not parse).
HostMemoryKind default_host_memory();

/// The calling thread's state, made on first use with default_thread_region().
/// nullptr only when host memory is exhausted. Cheap: called on every
/// interposed cudaMalloc.
ThreadState* thread_state() noexcept;

}  // namespace tms
