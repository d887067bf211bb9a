// The engine: pauseable allocations on an injected Driver.
//
// Semantics (DESIGN.md §3):
//  - pause/resume act on every allocation of a tag (all tags for nullopt)
//    that is in the other state; repeating either is harmless.
//  - Both are all-or-nothing. A failed pause leaves every allocation active
//    with its contents; a failed resume leaves every allocation paused with
//    its backup, and an out-of-memory error names the bytes needed and free.
//  - Releasing a resource (cuMemRelease, cuMemAddressFree, freeing host
//    memory) is the point of no return of an operation. If such a call fails,
//    the operation still completes and the resource is parked and given back
//    at the start of the next operation (see deferred_releases in stats).
//
// Locking: transition_mutex_ serializes pause and resume with each other;
// mutex_ guards the registry, the stats and each record's fields. Lock order:
// transition_mutex_, then mutex_. Driver calls (copies, synchronization,
// mapping) run without mutex_; records being worked on are marked busy, and
// free() of a busy record waits until it is idle again.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_buffer.h"
#include "core/allocation.h"
#include "core/registry.h"
#include "core/stats.h"
#include "driver/driver.h"

namespace tms {

class Engine {
 public:
  explicit Engine(Driver& driver);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  /// Frees every allocation, backup and stream it still holds.
  ~Engine();

  [[nodiscard]] Driver& driver() const { return driver_; }

  /// Reserves, creates and maps `request.size` bytes. @throws OutOfMemory
  /// (also when the allocation would leave less than the margin free),
  /// InvalidArgument, DriverError.
  DevicePtr allocate(const AllocationRequest& request);
  /// Frees the allocation based at `ptr`, active or paused. An active one
  /// waits for its device first. @throws InvalidArgument for an unknown or
  /// interior pointer; DriverError (then the allocation is unchanged).
  void free(DevicePtr ptr);
  [[nodiscard]] bool owns(DevicePtr ptr) const;

  /// @throws OutOfMemory (backup memory), DriverError; nothing changed then.
  void pause(const std::optional<std::string>& tag);
  /// @throws OutOfMemory with bytes needed and free, DriverError; nothing
  /// changed then.
  void resume(const std::optional<std::string>& tag);

  /// Host copy of [ptr, ptr+size) of a paused allocation with a backup, or
  /// nullptr when there is none. @throws InvalidArgument when the range runs
  /// past its allocation.
  [[nodiscard]] std::uint8_t* backup_pointer(DevicePtr ptr, std::size_t size) const;

  void set_memory_margin_bytes(std::size_t bytes);
  [[nodiscard]] std::size_t memory_margin_bytes() const;
  /// Keep host backups after resume for reuse by the next pause.
  void set_retain_cpu_backup(bool retain);
  [[nodiscard]] bool retain_cpu_backup() const;

  [[nodiscard]] EngineStats stats() const;

 private:
  struct Counters {
    std::uint64_t pause_count = 0;
    std::uint64_t resume_count = 0;
    double last_pause_seconds = 0;
    double last_resume_seconds = 0;
    double last_pause_unix = 0;
    double last_resume_unix = 0;
  };
  using StatsKey = std::pair<std::string, int>;

  /// Marks the matching allocations busy and returns them.
  std::vector<Allocation*> claim(const std::optional<std::string>& tag, AllocationState state);
  /// Clears busy on `claimed` and wakes waiters in free().
  void unclaim(const std::vector<Allocation*>& claimed);
  void synchronize_devices(const std::vector<Allocation*>& allocations);
  /// Fails with OutOfMemory unless `device` keeps the margin after `bytes`.
  void check_headroom(int device, std::size_t bytes, const char* operation);
  void record_transition(const std::vector<Allocation*>& allocations, bool pause, double seconds);
  /// Releases through the driver, or parks the resource if that fails.
  void release_or_park(PhysicalHandle handle);
  void free_reservation_or_park(DevicePtr va, std::size_t size);
  void free_host_or_park(HostBuffer buffer);
  void retry_parked();

  Driver& driver_;
  std::mutex transition_mutex_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  Registry registry_;
  std::map<StatsKey, Counters> counters_;
  CopyPipeline copies_;  // only pause and resume use it (under transition_mutex_)
  std::size_t margin_bytes_ = 0;
  bool retain_cpu_backup_ = false;

  std::vector<PhysicalHandle> parked_handles_;
  std::vector<std::pair<DevicePtr, std::size_t>> parked_reservations_;
  std::vector<HostBuffer> parked_host_buffers_;
};

}  // namespace tms
