// The engine: pauseable allocations on an injected Driver.
//
// Semantics (docs/architecture.md has the whole picture):
//  - pause/resume act on every allocation of a tag (all tags for nullopt)
//    that is in the other state; repeating either is harmless.
//  - Both are all-or-nothing transactions. A failed pause leaves every
//    allocation active with its contents; a failed resume leaves every
//    allocation paused with its backup, and an out-of-memory error names the
//    bytes needed and free.
//  - What a backup is and how it is saved and restored belongs to its kind
//    (backup/backup_method.h); the engine only runs the transaction: claim,
//    synchronize, save, unmap, commit for pause, and claim, map (plain host
//    copies restored as each batch is mapped, core/resume_pipeline.h),
//    restore the rest, commit for resume. A resume gives the host memory of
//    the backups it does not retain back before it returns.
//  - Releasing a resource (cuMemRelease, cuMemAddressFree, freeing host
//    memory) is the point of no return of an operation. If such a call fails,
//    the operation still completes and the resource is parked and given back
//    at the start of the next operation (see deferred_releases in stats).
//  - A failed pause maps back what it had unmapped. If that fails too (a
//    second driver failure), the allocation is marked broken
//    (AllocationState::kBroken) instead of claiming to be active: its
//    physical memory and contents are kept, every later pause or resume
//    tries to map it again, and until that works pause/resume of its tag
//    fail with InvalidState and free() gives back what it holds.
//  - A non-blocking resume maps everything as a blocking one does, queues
//    the plain host copies' restores and returns: until they are done the
//    records stay busy (free waits; pause and resume of the tag, a lease and
//    discard_backup wait first) and keep their backups; a watcher thread
//    waits for the copies and then lets go of the backups. A restore that
//    failed keeps the backups and is raised by wait() (or by the next pause
//    or resume of the tag); the wait after that retries it.
//  - Readers of a host backup hold a lease (lease_backup): the bytes stay
//    valid until the lease ends, even if a resume, free or discard lets go
//    of the backup meanwhile (its memory then goes back with the last lease).
//
// Locking: transition_mutex_ serializes pause, resume, discard_backup and
// remove_disk_backups with each other; mutex_ guards the registry, the
// stats, the settings, the leases and each record's fields. Lock order:
// transition_mutex_, then mutex_, then HostMemory's own mutex (releasing a
// HostBuffer may take it). Driver calls (copies, synchronization,
// mapping) and file I/O run without mutex_; records being worked on are
// marked busy, and free() of a busy record waits until it is idle again.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backup/backup_methods.h"
#include "backup/copy_pipeline.h"
#include "backup/disk_backup.h"
#include "backup/host_memory.h"
#include "backup/ordered_worker.h"
#include "common/errors.h"
#include "common/phase_clock.h"
#include "core/allocation.h"
#include "core/allocation_owners.h"
#include "core/registry.h"
#include "core/resume_pipeline.h"
#include "core/stats.h"
#include "driver/driver.h"
#include "io/file_io.h"
#include "vmm/parking_lot.h"

namespace tms {

/// A reader's hold on a host backup (Engine::lease_backup).
struct BackupLease {
  std::uint64_t id = 0;          ///< 0: there was no backup to lease
  std::uint8_t* data = nullptr;  ///< the leased range's first byte
};

/// How Engine::resume returns.
enum class ResumeMode {
  kBlocking,  ///< once every allocation is mapped and restored
  /// Once every allocation is mapped: plain host backups are restored
  /// behind the caller (Engine::wait); the other kinds before it returns.
  kNonBlocking,
};

/// Tuning and test seams; the defaults are what the library uses.
struct EngineOptions {
  HostMemoryOptions host;
  CopyPipelineOptions copies;
  DiskBackupOptions disk;        ///< from TMS_DISK_BACKUP_CHUNK_MB, _WRITE_DEPTH, _READ_DEPTH
  ResumePipelineOptions resume;  ///< batches in which resume maps while it copies
  /// File operations of disk backup; nullptr: the real ones (posix_file_io).
  /// Must outlive the engine.
  FileIo* file_io = nullptr;
};

class Engine {
 public:
  explicit Engine(Driver& driver, EngineOptions options = {});
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  /// Frees every allocation, backup, backup file and stream it still holds,
  /// through their owners: what the driver refuses is parked and retried
  /// once, and what is still left is logged. Never throws.
  ~Engine();

  [[nodiscard]] Driver& driver() const { return driver_; }

  /// Reserves, creates and maps `request.size` bytes. @throws OutOfMemory
  /// (also when the allocation would leave less than the margin free),
  /// InvalidArgument, DriverError; ConfigError when the policy asks for
  /// disk backup and no directory is set, IoError when that directory is
  /// not writable.
  DevicePtr allocate(const AllocationRequest& request);
  /// Frees the allocation based at `ptr`, active or paused. An active one
  /// waits for its device first. @throws InvalidArgument for an unknown or
  /// interior pointer; DriverError (then the allocation is unchanged).
  void free(DevicePtr ptr);
  [[nodiscard]] bool owns(DevicePtr ptr) const;

  /// @throws OutOfMemory (backup memory), DriverError, IoError (disk
  /// backup: no backup file remains then); nothing changed then.
  void pause(const std::optional<std::string>& tag);
  /// @throws OutOfMemory with bytes needed and free (also without memory
  /// for a compressed restore's scratch; "unknown" free when the driver
  /// cannot measure it), DriverError, IoError (disk backup: the message
  /// names the allocation whose file cannot be restored; see
  /// discard_backup); nothing changed then: everything stays
  /// paused with its host backup or backup file. On success the host memory
  /// of the backups it does not retain is back with the OS when it returns
  /// (a block that cannot be freed is kept and retried, not an error), and
  /// the disk backup files are removed.
  ///
  /// kNonBlocking: the same, except that the plain host copies are still
  /// being copied back when it returns; their memory must not be used
  /// before wait() or wait_on_stream(), and their host memory goes back
  /// once the copies are done. Failures after it returned: see wait().
  /// Both modes first wait for restores of `tag` still running, and raise
  /// InvalidState for one that failed.
  void resume(const std::optional<std::string>& tag, ResumeMode mode = ResumeMode::kBlocking);
  /// Returns once the restores that non-blocking resumes of `tag` (all tags
  /// for nullopt) left running are done and their host memory is given
  /// back. @throws Error (TMS_ERROR_DRIVER) when one of them failed: its
  /// allocations stay mapped with their backups kept, and the next wait()
  /// copies them back again (raising again if that fails too); free() gives
  /// them up, discard_backup() drops the backup and keeps the memory.
  void wait(const std::optional<std::string>& tag);
  /// Makes the work queued on `stream` from now on wait for those restores,
  /// without a host wait (nullptr: the legacy stream of the calling thread's
  /// context). @throws as wait() for a restore known to have failed (it does
  /// not retry); a failure found later is raised by the next wait() or pause.
  void wait_on_stream(const std::optional<std::string>& tag, StreamHandle stream);

  /// Host copy of [ptr, ptr+size) of an allocation with a plain host
  /// backup: a paused one's, or an active one's retained backup (what its
  /// last pause saved), held until end_lease(id) even if a resume, free or
  /// discard lets go of the backup meanwhile. {0, nullptr} when there is
  /// none (no backup, a disk backup, not engine memory). @throws
  /// InvalidArgument when the range runs past its allocation, InvalidState
  /// for a compressed backup (it has no bytes to read in place).
  [[nodiscard]] BackupLease lease_backup(DevicePtr ptr, std::size_t size);
  /// Ends a lease; its memory goes back if nothing else holds it. Unknown
  /// ids (0, ended ones) are ignored.
  void end_lease(std::uint64_t id) noexcept;
  /// As lease_backup, without a lease: the pointer is valid only until the
  /// allocation's next resume, free or discard (the C ABI's
  /// tms_get_cpu_backup_pointer, kept for callers of the library it replaces).
  [[nodiscard]] std::uint8_t* backup_pointer(DevicePtr ptr, std::size_t size) const;

  void set_memory_margin_bytes(std::size_t bytes);
  [[nodiscard]] std::size_t memory_margin_bytes() const;
  /// Keep host backups after resume for reuse by the next pause (the same
  /// host address every cycle, readable through backup_pointer), and pool
  /// the page-locked host memory of freed allocations (bounded by
  /// HostMemoryOptions::pool_limit_bytes) for later pauses. Turning it off
  /// gives the pool back; backups already retained stay until the next
  /// resume of their allocation (which no longer retains) or its free.
  void set_retain_cpu_backup(bool retain);
  [[nodiscard]] bool retain_cpu_backup() const;

  /// Directory for new disk backup files (TMS_DISK_BACKUP_DIR by default,
  /// set by the runtime): created if missing (mode 0700), checked and made
  /// absolute by the disk backup component (DiskBackupIo::prepare_directory).
  /// Files already written stay where they are.
  /// @throws InvalidArgument for an empty path, IoError for a directory
  /// that cannot be made or is not safe; the setting is unchanged then.
  void set_disk_backup_dir(const std::string& dir);
  /// Where disk backups go while no directory is set (the runtime passes
  /// TMPDIR or /tmp): checked and adopted at the first disk-backed
  /// allocation, so an unusable default fails that allocation, not this call.
  void set_default_disk_backup_dir(const std::string& dir);
  /// The directory set, else the default one; "" when neither.
  [[nodiscard]] std::string disk_backup_dir() const;
  /// Drops the backup (disk file or host copy) of the paused allocation
  /// holding `ptr`, for when it cannot be restored: the allocation's next
  /// resume maps it without its contents (logged as an error now and a
  /// warning then). No effect on an allocation without a backup.
  /// @throws InvalidArgument (not an engine pointer), InvalidState (active).
  void discard_backup(DevicePtr ptr);
  /// Removes every disk backup file now, for exit handlers. Allocations
  /// paused with a disk backup lose their contents: a later resume gives
  /// them zero-filled memory. Waits for a pause or resume in progress.
  /// Never throws; failures are logged.
  void remove_disk_backups() noexcept;

  /// Gives back host memory kept only for speed: the pool and the disk
  /// staging buffer (made again on next use).
  void trim_host_memory();
  /// Waits until what was given back in the background so far is released:
  /// host memory (HostMemoryOptions::background_release: memory of
  /// allocations freed while paused and of discarded backups; resume gives
  /// its host backups back itself) and the descriptors of disk backup files
  /// (DiskBackupIo::close_later; the filesystem frees their space then).
  void drain_host_releases();

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

  /// The restore copies a non-blocking resume left running.
  struct RestoreInFlight {
    std::vector<Allocation*> allocations;  ///< busy until finish_restore
    std::vector<LaneMark> marks;           ///< where the copies end, per lane
  };
  using RestoreWatcher = OrderedWorker<std::shared_ptr<RestoreInFlight>>;

  /// A record's plain host backup of [ptr, ptr+size), and the offset of ptr
  /// in it; {nullptr, 0} when there is none. Only with mutex_ held.
  [[nodiscard]] std::pair<std::shared_ptr<const HostBuffer>, std::size_t> host_copy_of(
      DevicePtr ptr, std::size_t size) const;
  /// Unmaps every claimed allocation (pause step 3), undone unless each
  /// Unmapping is released. @throws the driver's error, saying how many
  /// allocations could not be mapped back and are broken now.
  std::vector<Unmapping> unmap_all(const std::vector<Allocation*>& claimed);
  /// What resume's pipeline maps, with the plain host copies it restores.
  static std::vector<ResumePipeline::Item> pipeline_items(const std::vector<Allocation*>& claimed);
  /// Resume step 3: the claimed records take their memory from `pipeline`
  /// and become active; what is not retained of their backups is returned
  /// for the caller to give back, except the host copies of `in_flight` (a
  /// non-blocking resume's, still being copied back, whose marks it takes
  /// from the pipeline). @throws only before anything is committed or
  /// detached (the pipeline can still unwind then).
  Released commit_resume(const std::vector<Allocation*>& claimed, ResumePipeline& pipeline,
                         const std::shared_ptr<RestoreInFlight>& in_flight);
  /// Marks the matching allocations busy and returns them.
  std::vector<Allocation*> claim(const std::optional<std::string>& tag, AllocationState state);
  /// Marks the idle records whose restore failed busy and returns them.
  std::vector<Allocation*> claim_failed_restores(const std::optional<std::string>& tag);
  /// Clears busy on `claimed` (except on `kept`) and wakes waiters in free().
  void unclaim(const std::vector<Allocation*>& claimed, const std::vector<Allocation*>& kept = {});
  /// Moves what resume does not retain of `allocation`'s backup into
  /// `released` (which has room). Only with mutex_ held.
  void let_go_of_backup(Allocation& allocation, Released& released) noexcept;

  // --- non-blocking resume (core/engine_restores.cpp) ------------------------
  /// Hands `restore` to the watcher thread (or finishes it here when there
  /// is none). Without mutex_ held.
  void watch_restore(std::shared_ptr<RestoreInFlight> restore) noexcept;
  /// Waits for the restore's copies, then lets go of its backups and clears
  /// busy; on failure keeps the backups and records the error.
  void finish_restore(const std::shared_ptr<RestoreInFlight>& restore) noexcept;
  /// Whether a restore of `tag` is running (mutex_ held).
  [[nodiscard]] bool restore_running(const std::optional<std::string>& tag) const;
  [[nodiscard]] bool restore_running(const Allocation& allocation) const;
  /// The message for the failed restores of `tag`, all marked raised now
  /// (the next wait retries them); nullopt when there are none. mutex_ held.
  [[nodiscard]] std::optional<std::string> raise_failed_restores(
      const std::optional<std::string>& tag);
  /// Waits for the restores of `tag` still running; @throws InvalidState
  /// naming `operation` when one of them failed. Before claiming.
  void settle_restores(const std::optional<std::string>& tag, const char* operation);
  /// Copies the failed restores of `tag` back again (blocking). @throws
  /// Error when that fails too; the backups are kept.
  void retry_restores(const std::optional<std::string>& tag);
  void synchronize_devices(const std::vector<Allocation*>& allocations);
  /// @throws InvalidState when the driver reports a stream capture that the
  /// operation would invalidate on a device with allocations of `tag`.
  void refuse_during_capture(const std::optional<std::string>& tag, const char* operation);
  /// Fails with OutOfMemory unless `device` keeps the margin after `bytes`.
  void check_headroom(int device, std::size_t bytes, const char* operation);
  /// Free memory on `device` for an out-of-memory error's message, or
  /// nullopt when the driver cannot say: its DriverError must not replace
  /// the out-of-memory error the caller is to see.
  std::optional<std::size_t> free_bytes_for_message(int device) noexcept;
  /// The error of a resume that ran out of memory on `device` and rolled
  /// back (every allocation paused with its backup): the bytes it needed
  /// there, what is free now (when that can be measured) and `cause`.
  OutOfMemory resume_out_of_memory(const std::optional<std::string>& tag, int device,
                                   std::size_t needed, const OutOfMemory& cause);
  /// Counts a committed pause or resume in the statistics, and logs it
  /// (info). Never throws: without memory for it, the operation still
  /// succeeded.
  void record_transition(const std::vector<Allocation*>& allocations,
                         const std::optional<std::string>& tag, bool pause,
                         const PhaseClock& clock) noexcept;
  /// Gives back what earlier give-backs could not (see ParkingLot).
  void retry_parked();
  /// Tries to map every kBroken allocation again; those that succeed are
  /// active again with their contents. Only with transition_mutex_ held:
  /// a repair marks its records busy, and a pause or resume running beside
  /// it would skip them (claim leaves busy records alone).
  void repair_broken() noexcept;
  /// @throws InvalidState when an allocation of `tag` is still broken.
  void refuse_broken(const std::optional<std::string>& tag, const char* operation) const;

  /// Unclaims its allocations when the operation that claimed them ends.
  class ClaimGuard {
   public:
    ClaimGuard(Engine& engine, const std::vector<Allocation*>& claimed)
        : engine_(engine), claimed_(claimed) {}
    ClaimGuard(const ClaimGuard&) = delete;
    ClaimGuard& operator=(const ClaimGuard&) = delete;
    ~ClaimGuard() {
      static const std::vector<Allocation*> kNone;
      engine_.unclaim(claimed_, kept_ ? kept_->allocations : kNone);
      // Last: once the watcher is done with them, the records may be freed.
      if (kept_) engine_.watch_restore(std::move(kept_));
    }
    /// Leaves the records of `restore` busy at the end and hands it to the
    /// watcher then: the operation reads its records until it returns.
    void keep(std::shared_ptr<RestoreInFlight> restore) noexcept { kept_ = std::move(restore); }

   private:
    Engine& engine_;
    const std::vector<Allocation*>& claimed_;
    std::shared_ptr<RestoreInFlight> kept_;
  };

  Driver& driver_;
  std::mutex transition_mutex_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  ParkingLot parking_;  // before everything whose teardown may park
  // Declared before everything that holds host buffers, so it outlives them.
  HostMemory host_memory_;
  CopyPipeline copies_;  // only pause and resume use it (under transition_mutex_)
  ResumePipelineOptions resume_options_;
  DiskBackupIo disk_;  // likewise
  BackupMethods methods_;
  Registry registry_;
  // After host_memory_: a lease still held at teardown gives its memory back first.
  std::map<std::uint64_t, std::shared_ptr<const HostBuffer>> leases_;
  std::uint64_t next_lease_ = 1;
  std::map<StatsKey, Counters> counters_;
  std::size_t margin_bytes_ = 0;
  bool retain_cpu_backup_ = false;
  std::vector<std::shared_ptr<RestoreInFlight>> restores_in_flight_;
  /// Started by the first non-blocking resume (under mutex_; read under it,
  /// destroyed only by ~Engine, which joins it first).
  std::unique_ptr<RestoreWatcher> restore_watcher_;
};

}  // namespace tms
