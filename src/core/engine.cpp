// The engine's operations: allocate and free, the pause and resume
// transactions and the helpers they share (claiming records, capture and
// headroom checks, repairs). Backup kinds live in backup/ (backup_method.h),
// deferred releases in the parking lot, VMM owners in vmm_handles and
// allocation_owners.
#include "core/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <set>

#include "common/errors.h"
#include "common/log.h"
#include "common/phase_clock.h"
#include "common/sizes.h"
#include "core/allocation_owners.h"
#include "core/resume_pipeline.h"
#include "core/tag_text.h"
#include "vmm/vmm_handles.h"

namespace tms {
namespace {

std::string describe_milliseconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f ms", seconds * 1e3);
  return text;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "3 allocations (8.00 GiB, 2.00 GiB to host) of tag 'kv' on device 0" for
// the transition log lines.
std::string describe_transition(const std::vector<Allocation*>& allocations,
                                const std::optional<std::string>& tag, const char* backup_word) {
  std::uint64_t bytes = 0;
  std::uint64_t host = 0;
  std::uint64_t disk = 0;
  std::set<int> devices;
  for (const Allocation* allocation : allocations) {
    bytes += allocation->size;
    if (keeps_host_copy(allocation->policy.kind)) host += allocation->requested_size;
    if (allocation->policy.kind == BackupKind::kDisk) disk += allocation->requested_size;
    devices.insert(allocation->device);
  }
  std::string on = devices.size() == 1 ? " on device " : " on devices ";
  for (int device : devices)
    on += (device == *devices.begin() ? "" : ", ") + std::to_string(device);
  std::string text = std::to_string(allocations.size()) + " allocations (" + describe_size(bytes);
  if (host > 0) text += ", " + describe_size(host) + " " + backup_word + " host";
  if (disk > 0) text += ", " + describe_size(disk) + " " + backup_word + " disk";
  return text + ") of " + describe_tag(tag) + on;
}

// The claimed allocations that have a backup method, grouped by kind: each
// kind saves or restores its members together. `to_restore` keeps only the
// backups that resume's pipeline did not copy back (none: never paused with
// one, or discarded; a plain host copy: restored as it was mapped), so that
// no kind gets a restore phase, and a phase in the log, for nothing.
std::map<BackupKind, std::vector<Allocation*>> by_backup_kind(
    const std::vector<Allocation*>& claimed, bool to_restore) {
  std::map<BackupKind, std::vector<Allocation*>> groups;
  for (Allocation* allocation : claimed) {
    if (allocation->policy.kind == BackupKind::kNone) continue;
    if (to_restore && (!allocation->backup || allocation->backup->host_copy())) continue;
    groups[allocation->policy.kind].push_back(allocation);
  }
  return groups;
}

bool any_host_copy(const std::vector<ResumePipeline::Item>& items) {
  return std::any_of(items.begin(), items.end(),
                     [](const ResumePipeline::Item& item) { return item.backup != nullptr; });
}

std::vector<BackupTarget> targets_of(const std::vector<Allocation*>& allocations) {
  std::vector<BackupTarget> targets;
  targets.reserve(allocations.size());
  for (const Allocation* allocation : allocations) targets.push_back(allocation->backup_target());
  return targets;
}

}  // namespace

Engine::Engine(Driver& driver, EngineOptions options)
    : driver_(driver),
      parking_(driver),
      host_memory_(driver, options.host),
      copies_(driver, options.copies),
      resume_options_(options.resume),
      disk_(host_memory_, options.file_io != nullptr ? *options.file_io : posix_file_io(), copies_,
            options.disk),
      methods_(driver, parking_, host_memory_, copies_, disk_) {}

Engine::~Engine() {
  // First, with no lock held: the watcher finishes the restores in flight
  // (it takes mutex_), so every record is idle below.
  restore_watcher_.reset();
  std::lock_guard transition(transition_mutex_);
  std::lock_guard lock(mutex_);
  // Teardown is best effort and never throws: a driver that is already gone
  // (process exit) must not turn into a crash, and one failure must not keep
  // the rest. Each allocation's resources are adopted into owners and let go;
  // what the driver refuses is parked and tried once more at the end.
  for (auto& [base, allocation] : registry_.all()) {
    Allocation& a = *allocation;
    const bool mapped = a.state == AllocationState::kActive || a.range_mapped;
    adopt_device_resources(parking_, a, mapped).give_back();
    if (!a.backup) continue;
    Released released;
    try {
      released.reserve(1);
    } catch (const std::exception&) {
      continue;  // the record's own teardown closes the file and frees the memory
    }
    a.backup->release_into(released);
    a.backup.reset();
    for (DiskFile& file : released.files) parking_.remove_or_park(std::move(file));
  }
  parking_.retry();
  try {
    disk_.release_staging();
  } catch (const std::exception& error) {
    log(LogLevel::kWarning, std::string("engine teardown incomplete: ") + error.what());
  }
  if (const std::size_t left = parking_.size(); left > 0) {
    log(LogLevel::kWarning, "engine teardown could not give back " + std::to_string(left) +
                                " resources; they are leaked");
  }
}

// ---- allocate / free -----------------------------------------------------

DevicePtr Engine::allocate(const AllocationRequest& request) {
  if (request.size == 0) throw InvalidArgument("allocation size must be positive");
  if (request.device < -1) {
    throw InvalidArgument("device " + std::to_string(request.device) +
                          " does not exist; pass a device index, or -1 for the current device");
  }
  const int device = request.device >= 0 ? request.device : driver_.current_device();
  if (device >= driver_.device_count()) {
    throw InvalidArgument("device " + std::to_string(device) + " does not exist (" +
                          std::to_string(driver_.device_count()) + " devices)");
  }
  retry_parked();
  if (BackupMethod* method = methods_.method(request.policy.kind)) {
    method->prepare_allocation(device);
  }
  const std::size_t granularity = driver_.granularity(device);
  if (request.size > SIZE_MAX - (granularity - 1)) {
    // Rounding up would wrap around to a tiny size.
    throw OutOfMemory("allocation",
                      "allocation of " + describe_bytes(request.size) +
                          " exceeds the address space of device " + std::to_string(device),
                      request.size, free_bytes_for_message(device).value_or(0));
  }
  const std::size_t size = round_up(request.size, granularity);
  check_headroom(device, size, "allocation");

  VaReservation reservation = VaReservation::reserve(driver_, parking_, size, granularity);
  PhysicalMemory physical = PhysicalMemory::create(driver_, parking_, device, size);
  Mapping mapping =
      Mapping::map(driver_, parking_, reservation.va(), size, physical.handle(), device);

  auto allocation = std::make_unique<Allocation>();
  allocation->base = reservation.va();
  allocation->requested_size = request.size;
  allocation->size = size;
  allocation->device = device;
  allocation->tag = request.tag;
  allocation->policy = request.policy;
  allocation->handle = physical.handle();

  std::lock_guard lock(mutex_);
  registry_.insert(std::move(allocation));
  mapping.release();
  physical.release();
  return reservation.release().va;
}

void Engine::free(DevicePtr ptr) {
  Allocation* allocation = nullptr;
  {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] {
      allocation = registry_.find_containing(ptr);
      return allocation == nullptr || !allocation->busy;
    });
    if (allocation == nullptr) {
      throw InvalidArgument("free of a pointer the engine did not allocate");
    }
    if (allocation->base != ptr) {
      throw InvalidArgument("free of an interior pointer; pass the allocation's base address");
    }
    allocation->busy = true;
  }
  // The record cannot go away while busy; work on it without the lock.
  try {
    if (allocation->state == AllocationState::kActive || allocation->range_mapped) {
      // As cudaFree does: kernels may still use the memory.
      driver_.synchronize(allocation->device);
      driver_.unmap(allocation->base, allocation->size);
    }
  } catch (...) {
    unclaim({allocation});
    throw;
  }
  // Past the unmap nothing can be undone: finish and park what fails.
  std::unique_ptr<Allocation> owned;
  {
    std::lock_guard lock(mutex_);
    owned = registry_.remove(ptr);
  }
  idle_.notify_all();
  adopt_device_resources(parking_, *owned, /*mapped=*/false).give_back();
  if (!owned->backup) return;
  Released released;
  try {
    released.reserve(1);
  } catch (const std::exception&) {
    return;  // past the point of no return: `owned` gives its backup back as it goes
  }
  {
    std::lock_guard lock(mutex_);  // against a lease being taken (HostBackup::release_into)
    owned->backup->release_into(released);
  }
  for (DiskFile& file : released.files) disk_.close_later(std::move(file));
}

bool Engine::owns(DevicePtr ptr) const {
  std::lock_guard lock(mutex_);
  return registry_.find_containing(ptr) != nullptr;
}

// ---- pause ---------------------------------------------------------------

void Engine::pause(const std::optional<std::string>& tag) {
  std::lock_guard transition(transition_mutex_);
  refuse_during_capture(tag, "pause");  // first: even retrying give-backs would disturb a capture
  retry_parked();
  repair_broken();
  refuse_broken(tag, "pause");
  settle_restores(tag, "pause");
  PhaseClock clock;
  const std::vector<Allocation*> claimed = claim(tag, AllocationState::kActive);
  if (claimed.empty()) return;
  const ClaimGuard unclaim_on_exit(*this, claimed);

  // 1. Let the work that uses the memory finish, so the backups see its
  //    results and nothing touches a range after it is unmapped.
  synchronize_devices(claimed);
  clock.lap("synchronize");

  // 2. Save, kind by kind. The new backups wait here for the commit: if
  //    anything below fails, dropping them gives back what they hold, and
  //    every allocation is still active and intact.
  std::map<Allocation*, std::unique_ptr<Backup>> saved;
  for (const auto& [kind, members] : by_backup_kind(claimed, /*to_restore=*/false)) {
    std::vector<std::unique_ptr<Backup>> backups = methods_.method(kind)->save(targets_of(members));
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (backups[i]) saved[members[i]] = std::move(backups[i]);  // else refreshed in place
    }
    clock.lap(std::string(backup_kind_name(kind)) + " backup");
  }

  // 3. Unmap, the mirror of resume's mapping: undone unless the pause commits.
  std::vector<Unmapping> unmappings = unmap_all(claimed);
  clock.lap("unmap");

  // 4. Commit: the unmaps stand, the physical memory goes back (parked if
  //    the driver refuses), and the new state is published.
  for (Unmapping& unmapping : unmappings) unmapping.release();
  for (Allocation* allocation : claimed) {
    PhysicalMemory::adopt(parking_, allocation->handle).reset();
  }
  clock.lap("release");
  {
    std::lock_guard lock(mutex_);
    for (Allocation* allocation : claimed) {
      allocation->handle = 0;
      allocation->state = AllocationState::kPaused;
      if (auto it = saved.find(allocation); it != saved.end())
        allocation->backup = std::move(it->second);
    }
  }
  record_transition(claimed, tag, /*pause=*/true, clock);
}

std::vector<Unmapping> Engine::unmap_all(const std::vector<Allocation*>& claimed) {
  // Each Unmapping maps its range back unless the pause commits (the
  // physical memory is still alive, so the contents come back intact), and
  // marks the record broken when even that fails.
  std::size_t broken = 0;
  const MapBackOrBreak map_back{&driver_, &mutex_, &broken};
  std::vector<Unmapping> unmappings;
  unmappings.reserve(claimed.size());
  try {
    for (Allocation* allocation : claimed) {
      unmappings.push_back(Unmapping::unmap(*allocation, map_back));
    }
  } catch (const Error& error) {
    for (Unmapping& unmapping : unmappings) unmapping.reset();  // now: the error counts them
    if (broken == 0) throw;
    // The pause did not leave everything active: say so in its error.
    throw Error(error.status(),
                std::string(error.what()) + "; then " + std::to_string(broken) +
                    " allocations could not be mapped again and are unusable (their contents "
                    "are kept): the next operation retries; free them to give their memory back");
  }
  return unmappings;
}

// ---- resume --------------------------------------------------------------

void Engine::resume(const std::optional<std::string>& tag, ResumeMode mode) {
  std::lock_guard transition(transition_mutex_);
  refuse_during_capture(tag, "resume");
  retry_parked();
  repair_broken();
  refuse_broken(tag, "resume");
  settle_restores(tag, "resume");
  PhaseClock clock;
  const std::vector<Allocation*> claimed = claim(tag, AllocationState::kPaused);
  if (claimed.empty()) return;
  ClaimGuard unclaim_on_exit(*this, claimed);

  // Check every device up front so an obvious shortfall fails before
  // anything is created, with the whole amount in the message.
  std::map<int, std::size_t> needed;
  for (const Allocation* allocation : claimed) needed[allocation->device] += allocation->size;
  for (const auto& [device, bytes] : needed) check_headroom(device, bytes, "resume");
  clock.lap("headroom check");

  // 1. Physical memory for everything, mapped at the same addresses, batch
  //    by batch while the plain host copies of the batches already mapped
  //    are copied back. On any failure the pipeline waits for its copies and
  //    unwinds; the backups are untouched, everything stays paused.
  ResumePipeline pipeline(driver_, parking_, copies_, resume_options_);
  const std::vector<ResumePipeline::Item> items = pipeline_items(claimed);
  try {
    pipeline.map_and_restore(items);
  } catch (const DeviceOutOfMemory& error) {
    pipeline.unwind();  // give back what was taken before measuring what is free
    throw resume_out_of_memory(tag, error.device(), needed[error.device()], error);
  }
  clock.lap("create and map");
  // Non-blocking: the host copies run on behind the caller (waited for by
  // the watcher, or by wait()); only they can, the other kinds restore here.
  std::shared_ptr<RestoreInFlight> in_flight;
  if (mode == ResumeMode::kNonBlocking && any_host_copy(items)) {
    in_flight = std::make_shared<RestoreInFlight>();
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (items[i].backup != nullptr) in_flight->allocations.push_back(claimed[i]);
    }
  } else {
    pipeline.wait_restores();
    if (any_host_copy(items)) clock.lap("host restore");
  }

  // 2. The other backups, kind by kind, into memory now all mapped.
  for (const auto& [kind, members] : by_backup_kind(claimed, /*to_restore=*/true)) {
    try {
      methods_.method(kind)->restore(targets_of(members));
    } catch (const DeviceOutOfMemory& error) {
      // No memory for a restore's scratch: the same rollback and error as
      // above, the scratch counted in what the device needs.
      pipeline.unwind();
      throw resume_out_of_memory(tag, error.device(), needed[error.device()] + error.bytes_needed(),
                                 error);
    } catch (const OutOfMemory& error) {
      // Host memory (disk backup's staging): the method's message names the
      // allocation; say which resume it stopped, as for an IoError below.
      std::string message = error.what();
      const std::string prefix = "out of memory in " + error.call() + ": ";
      if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
      throw OutOfMemory("resume", "resume of " + describe_tag(tag) + " " + message,
                        error.bytes_needed(), error.bytes_free());
    } catch (const IoError& error) {
      throw IoError("resume of " + describe_tag(tag) + " failed: " + error.what());
    }
    clock.lap(std::string(backup_kind_name(kind)) + " restore");
  }

  // 3. Commit: the point of no return. Everything is mapped and restored,
  //    or (non-blocking) being restored by copies that nothing can stop now.
  Released released = commit_resume(claimed, pipeline, in_flight);
  // Busy until the watcher is done; it gets the restore as resume returns
  // (the records are read until then, and may be freed once it is done).
  if (in_flight) unclaim_on_exit.keep(std::move(in_flight));
  for (DiskFile& file : released.files) disk_.close_later(std::move(file));
  clock.lap("commit");

  // 4. Give the host backups back before returning, so that the caller (or
  //    a process beside it) finds the memory free the moment resume returns.
  //    Never fails: what cannot be freed is kept and retried.
  if (!released.host.empty()) {
    host_memory_.give_back(std::move(released.host));
    clock.lap("host release");
  }
  record_transition(claimed, tag, /*pause=*/false, clock);
}

std::vector<ResumePipeline::Item> Engine::pipeline_items(const std::vector<Allocation*>& claimed) {
  std::vector<ResumePipeline::Item> items;
  items.reserve(claimed.size());
  for (const Allocation* allocation : claimed) {
    // The record holds its backup, and so the host copy, until the commit.
    const HostBuffer* copy = allocation->backup ? allocation->backup->host_copy().get() : nullptr;
    items.push_back(
        {allocation->device, allocation->base, allocation->size, copy, allocation->requested_size});
  }
  return items;
}

Released Engine::commit_resume(const std::vector<Allocation*>& claimed, ResumePipeline& pipeline,
                               const std::shared_ptr<RestoreInFlight>& in_flight) {
  // Nothing in the loop below allocates, so the commit cannot stop half way.
  Released released;
  released.reserve(claimed.size());
  std::vector<const Allocation*> without_contents;
  without_contents.reserve(claimed.size());
  if (in_flight) {
    {
      std::lock_guard lock(mutex_);
      restores_in_flight_.reserve(restores_in_flight_.size() + 1);
    }
    // The last step that may fail: until it returns the copies are the
    // pipeline's, and its unwinding waits for them before unmapping.
    in_flight->marks = pipeline.detach_restores();
  }
  std::size_t next_in_flight = 0;
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < claimed.size(); ++i) {
      Allocation& allocation = *claimed[i];
      if (std::exchange(allocation.backup_discarded, false))
        without_contents.push_back(&allocation);
      allocation.handle = pipeline.commit(i);
      allocation.state = AllocationState::kActive;
      // A backup still being copied back goes when its copies are done
      // (in_flight's records are a subsequence of claimed, in order).
      if (in_flight && next_in_flight < in_flight->allocations.size() &&
          in_flight->allocations[next_in_flight] == &allocation) {
        ++next_in_flight;
        continue;
      }
      let_go_of_backup(allocation, released);
    }
    // Reserved by the caller: cannot throw. Seen by wait() from here on.
    if (in_flight) restores_in_flight_.push_back(in_flight);
  }
  for (const Allocation* allocation : without_contents) {
    try {
      log(LogLevel::kWarning, "resumed " + describe_allocation(*allocation) +
                                  " WITHOUT its contents: its backup was discarded");
    } catch (const std::exception&) {
      // A warning that cannot be formatted must not fail a committed resume.
    }
  }
  return released;
}

// ---- queries and settings ------------------------------------------------

std::pair<std::shared_ptr<const HostBuffer>, std::size_t> Engine::host_copy_of(
    DevicePtr ptr, std::size_t size) const {
  const Allocation* allocation = registry_.find_containing(ptr);
  if (allocation == nullptr) return {};
  const std::size_t offset = ptr - allocation->base;
  if (size > allocation->requested_size || offset > allocation->requested_size - size) {
    throw InvalidArgument("backup range of " + std::to_string(size) + " bytes at offset " +
                          std::to_string(offset) + " runs past its allocation of " +
                          std::to_string(allocation->requested_size) + " bytes");
  }
  // A paused allocation's backup holds its contents; an active one's, kept by
  // retain_cpu_backup, holds what the last pause saved.
  if (!allocation->backup) return {};
  if (allocation->policy.kind == BackupKind::kHostCompressed) {
    throw InvalidState(
        "this allocation's backup is compressed and cannot be read in place; use a region "
        "without compress=True for tensors read while paused");
  }
  std::shared_ptr<const HostBuffer> copy = allocation->backup->host_copy();
  if (!copy) return {};  // a disk backup: no host bytes
  return {std::move(copy), offset};
}

BackupLease Engine::lease_backup(DevicePtr ptr, std::size_t size) {
  std::unique_lock lock(mutex_);
  // Not while a non-blocking resume restores from it: the read would see
  // the backup that the restore is about to give back.
  idle_.wait(lock, [&] {
    const Allocation* allocation = registry_.find_containing(ptr);
    return allocation == nullptr || !restore_running(*allocation);
  });
  auto [copy, offset] = host_copy_of(ptr, size);
  if (!copy) return {};
  std::uint8_t* data = copy->data() + offset;
  const std::uint64_t id = next_lease_++;
  leases_.emplace(id, std::move(copy));
  return {id, data};
}

void Engine::end_lease(std::uint64_t id) noexcept {
  std::shared_ptr<const HostBuffer> last;  // may be the last owner: let go outside the lock
  std::lock_guard lock(mutex_);
  if (auto it = leases_.find(id); it != leases_.end()) {
    last = std::move(it->second);
    leases_.erase(it);
  }
}

std::uint8_t* Engine::backup_pointer(DevicePtr ptr, std::size_t size) const {
  std::lock_guard lock(mutex_);
  auto [copy, offset] = host_copy_of(ptr, size);
  return copy ? copy->data() + offset : nullptr;
}

void Engine::set_memory_margin_bytes(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  margin_bytes_ = bytes;
}

std::size_t Engine::memory_margin_bytes() const {
  std::lock_guard lock(mutex_);
  return margin_bytes_;
}

void Engine::set_retain_cpu_backup(bool retain) {
  host_memory_.set_pooling(retain);  // off: frees the pool of freed allocations' memory
  // Backups already retained stay readable: the next resume that does not
  // retain gives them back (or free() does), never this call.
  std::lock_guard lock(mutex_);
  retain_cpu_backup_ = retain;
}

bool Engine::retain_cpu_backup() const {
  std::lock_guard lock(mutex_);
  return retain_cpu_backup_;
}

void Engine::set_disk_backup_dir(const std::string& dir) { methods_.disk().set_directory(dir); }

void Engine::set_default_disk_backup_dir(const std::string& dir) {
  methods_.disk().set_default_directory(dir);
}

void Engine::discard_backup(DevicePtr ptr) {
  std::lock_guard transition(transition_mutex_);  // not while a resume reads it
  Released released;
  released.reserve(1);
  std::string described;
  bool restore_failed = false;
  {
    std::unique_lock lock(mutex_);
    Allocation* allocation = nullptr;
    // Busy here: being freed, or restored behind a non-blocking resume
    // (wait for that: its outcome decides).
    idle_.wait(lock, [&] {
      allocation = registry_.find_containing(ptr);
      return allocation == nullptr || !allocation->busy || !restore_running(*allocation);
    });
    if (allocation == nullptr || allocation->busy) {
      throw InvalidArgument("discard_backup of a pointer that is not (or no longer) engine memory");
    }
    restore_failed = !allocation->restore_error.empty();
    if (allocation->state != AllocationState::kPaused && !restore_failed) {
      throw InvalidState("discard_backup: " + describe_allocation(*allocation) +
                         " is active; only a paused allocation's backup (or one whose restore "
                         "failed) can be discarded");
    }
    if (!allocation->backup) return;               // nothing to drop
    described = describe_allocation(*allocation);  // first: it may throw
    allocation->backup->release_into(released);
    allocation->backup.reset();
    if (restore_failed) {
      allocation->restore_error.clear();  // active, with whatever the failed copy left
    } else {
      allocation->backup_discarded = true;
    }
  }
  try {
    log(LogLevel::kError, "discarded the backup of " + described + ": its contents are LOST; " +
                              (restore_failed ? "it stays mapped with undefined contents"
                                              : "resume maps it with undefined contents"));
  } catch (const std::exception&) {
    // The backup is gone already: an unformatted message must not say otherwise.
  }
  for (DiskFile& file : released.files) disk_.close_later(std::move(file));
  // released.host goes back in the background as it is destroyed.
}

std::string Engine::disk_backup_dir() const { return methods_.disk().directory(); }

void Engine::trim_host_memory() {
  {
    std::lock_guard transition(transition_mutex_);  // the staging buffer is used under it
    disk_.release_staging();
  }
  host_memory_.trim();  // after: the staging buffer may have gone to the pool
}

void Engine::drain_host_releases() {
  RestoreWatcher* watcher = nullptr;
  {
    std::lock_guard lock(mutex_);
    watcher = restore_watcher_.get();
  }
  if (watcher != nullptr) watcher->wait_idle();  // its restores give host memory back
  host_memory_.drain();
  disk_.wait_closed();
}

void Engine::remove_disk_backups() noexcept {
  try {
    std::lock_guard transition(transition_mutex_);
    Released released;
    {
      std::lock_guard lock(mutex_);
      released.reserve(registry_.all().size());
      // A busy record is being freed, which removes its file itself.
      for (auto& [base, allocation] : registry_.all()) {
        if (allocation->busy || !allocation->backup ||
            allocation->policy.kind != BackupKind::kDisk) {
          continue;
        }
        allocation->backup->release_into(released);
        allocation->backup.reset();
      }
    }
    for (DiskFile& file : released.files) parking_.remove_or_park(std::move(file));
    parking_.remove_files();
  } catch (const std::exception& error) {
    log(LogLevel::kError, std::string("removing disk backups failed: ") + error.what());
  }
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  std::map<StatsKey, TagDeviceStats> entries;
  auto entry = [&](const std::string& tag, int device) -> TagDeviceStats& {
    TagDeviceStats& stats = entries[{tag, device}];
    stats.tag = tag;
    stats.device = device;
    return stats;
  };
  for (const auto& [key, counters] : counters_) {
    TagDeviceStats& stats = entry(key.first, key.second);
    stats.pause_count = counters.pause_count;
    stats.resume_count = counters.resume_count;
    stats.last_pause_seconds = counters.last_pause_seconds;
    stats.last_resume_seconds = counters.last_resume_seconds;
    stats.last_pause_unix = counters.last_pause_unix;
    stats.last_resume_unix = counters.last_resume_unix;
  }
  for (const auto& [base, allocation] : registry_.all()) {
    TagDeviceStats& stats = entry(allocation->tag, allocation->device);
    ++stats.allocations;
    switch (allocation->state) {
      case AllocationState::kActive:
        stats.active_bytes += allocation->size;
        break;
      case AllocationState::kPaused:
        stats.paused_bytes += allocation->size;
        break;
      case AllocationState::kBroken:
        stats.broken_bytes += allocation->size;
        break;
    }
    if (allocation->backup) {
      stats.backup_bytes += allocation->backup->host_bytes();
      stats.disk_backup_bytes += allocation->backup->file_bytes();
    }
  }
  EngineStats result;
  for (auto& [key, stats] : entries) result.entries.push_back(std::move(stats));
  result.deferred_releases = parking_.size() + host_memory_.failed_releases();
  return result;
}

// ---- helpers -----------------------------------------------------------------

std::vector<Allocation*> Engine::claim(const std::optional<std::string>& tag,
                                       AllocationState state) {
  std::lock_guard lock(mutex_);
  std::vector<Allocation*> claimed;
  // Room first: a bad_alloc after marking a record would leave it busy for
  // good (nobody unclaims it), and free() of it would wait forever.
  claimed.reserve(registry_.all().size());
  for (auto& [base, allocation] : registry_.all()) {
    // A busy record is being freed: leave it to that.
    if (allocation->state != state || allocation->busy || !tag_matches(tag, allocation->tag)) {
      continue;
    }
    allocation->busy = true;
    claimed.push_back(allocation.get());
  }
  return claimed;
}

std::vector<Allocation*> Engine::claim_failed_restores(const std::optional<std::string>& tag) {
  std::lock_guard lock(mutex_);
  std::vector<Allocation*> claimed;
  claimed.reserve(registry_.all().size());  // first, as in claim()
  for (auto& [base, allocation] : registry_.all()) {
    if (allocation->restore_error.empty() || allocation->busy ||
        !tag_matches(tag, allocation->tag)) {
      continue;
    }
    allocation->busy = true;
    claimed.push_back(allocation.get());
  }
  return claimed;
}

void Engine::unclaim(const std::vector<Allocation*>& claimed,
                     const std::vector<Allocation*>& kept) {
  {
    std::lock_guard lock(mutex_);
    // `kept` is a subsequence of `claimed`, in order (see ClaimGuard::keep).
    std::size_t next_kept = 0;
    for (Allocation* allocation : claimed) {
      if (next_kept < kept.size() && kept[next_kept] == allocation) {
        ++next_kept;
        continue;
      }
      allocation->busy = false;
    }
  }
  idle_.notify_all();
}

void Engine::let_go_of_backup(Allocation& allocation, Released& released) noexcept {
  if (allocation.backup && !(retain_cpu_backup_ && allocation.backup->retainable())) {
    allocation.backup->release_into(released);
    allocation.backup.reset();
  }
}

void Engine::refuse_during_capture(const std::optional<std::string>& tag, const char* operation) {
  std::set<int> devices;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [base, allocation] : registry_.all()) {
      if (tag_matches(tag, allocation->tag)) devices.insert(allocation->device);
    }
  }
  for (int device : devices) {
    if (!driver_.capture_underway(device)) continue;
    // Synchronizing, mapping or unmapping now would invalidate that capture.
    throw InvalidState(std::string(operation) +
                       " refused: a CUDA graph capture is under way on "
                       "device " +
                       std::to_string(device) +
                       " (another thread captures on a "
                       "blocking stream); " +
                       operation +
                       " after the capture ends. The capture "
                       "is unaffected");
  }
}

void Engine::synchronize_devices(const std::vector<Allocation*>& allocations) {
  std::set<int> devices;
  for (const Allocation* allocation : allocations) devices.insert(allocation->device);
  for (int device : devices) driver_.synchronize(device);
}

void Engine::check_headroom(int device, std::size_t bytes, const char* operation) {
  const std::size_t margin = memory_margin_bytes();
  if (margin == 0) return;  // the driver reports a real shortfall itself
  const std::size_t free_bytes = driver_.memory_info(device).free_bytes;
  if (free_bytes >= bytes && free_bytes - bytes >= margin) return;
  throw OutOfMemory(operation,
                    std::string(operation) + " of " + describe_bytes(bytes) + " on device " +
                        std::to_string(device) + " would leave less than the memory margin of " +
                        describe_bytes(margin) + " free (" + describe_bytes(free_bytes) + " free)",
                    bytes + margin, free_bytes);
}

std::optional<std::size_t> Engine::free_bytes_for_message(int device) noexcept {
  try {
    return driver_.memory_info(device).free_bytes;
  } catch (const std::exception&) {
    return std::nullopt;  // the out-of-memory error being built matters more
  }
}

OutOfMemory Engine::resume_out_of_memory(const std::optional<std::string>& tag, int device,
                                         std::size_t needed, const OutOfMemory& cause) {
  const std::optional<std::size_t> free_bytes = free_bytes_for_message(device);
  return OutOfMemory("resume",
                     "resume of " + describe_tag(tag) + " needs " + describe_bytes(needed) +
                         " on device " + std::to_string(device) + ", " +
                         (free_bytes ? describe_bytes(*free_bytes) : std::string("unknown")) +
                         " free; everything stays paused with its backup (" + cause.what() + ")",
                     needed, free_bytes.value_or(cause.bytes_free()));
}

void Engine::record_transition(const std::vector<Allocation*>& allocations,
                               const std::optional<std::string>& tag, bool pause,
                               const PhaseClock& clock) noexcept {
  const double seconds = clock.total_seconds();
  const double now = unix_now();
  try {
    std::lock_guard lock(mutex_);
    std::set<StatsKey> keys;
    for (const Allocation* allocation : allocations)
      keys.insert({allocation->tag, allocation->device});
    for (const StatsKey& key : keys) {
      Counters& counters = counters_[key];
      if (pause) {
        ++counters.pause_count;
        counters.last_pause_seconds = seconds;
        counters.last_pause_unix = now;
      } else {
        ++counters.resume_count;
        counters.last_resume_seconds = seconds;
        counters.last_resume_unix = now;
      }
    }
  } catch (const std::exception&) {
    // No memory for the statistics: the operation is committed all the same.
  }
  if (!log_enabled(LogLevel::kInfo)) return;
  try {
    log(LogLevel::kInfo, std::string(pause ? "paused " : "resumed ") +
                             describe_transition(allocations, tag, pause ? "to" : "from") + " in " +
                             describe_milliseconds(seconds) + ": " + clock.describe());
  } catch (const std::exception&) {
    // Likewise for the log line.
  }
}

void Engine::retry_parked() {
  host_memory_.retry_failed();
  parking_.retry();
}

void Engine::repair_broken() noexcept {
  std::vector<Allocation*> claimed;
  try {
    claimed = claim(std::nullopt, AllocationState::kBroken);
  } catch (const std::exception&) {
    return;  // host memory exhausted: the next operation tries again
  }
  if (claimed.empty()) return;
  const ClaimGuard unclaim_on_exit(*this, claimed);
  for (Allocation* allocation : claimed) {
    try {
      if (!allocation->range_mapped) {
        driver_.map(allocation->base, allocation->size, allocation->handle);
        std::lock_guard lock(mutex_);
        allocation->range_mapped = true;
      }
      driver_.set_access(allocation->base, allocation->size, allocation->device);
      {
        std::lock_guard lock(mutex_);
        allocation->state = AllocationState::kActive;
        allocation->range_mapped = false;
      }
      log(LogLevel::kWarning, "the allocation at " + hex_address(allocation->base) +
                                  " is mapped again and usable, with its contents");
    } catch (const std::exception& error) {
      log(LogLevel::kWarning, "the unusable allocation at " + hex_address(allocation->base) +
                                  " could not be mapped again yet: " + error.what());
    }
  }
}

void Engine::refuse_broken(const std::optional<std::string>& tag, const char* operation) const {
  std::lock_guard lock(mutex_);
  for (const auto& entry : registry_.all()) {
    const Allocation* allocation = entry.second.get();
    if (allocation->state != AllocationState::kBroken || !tag_matches(tag, allocation->tag)) {
      continue;
    }
    throw InvalidState(std::string(operation) + " of " + describe_tag(tag) +
                       " refused: " + describe_allocation(*allocation) +
                       " is unusable since a failed pause could not map it again, and mapping "
                       "it still fails; free it (its memory is given back) or retry later");
  }
}

}  // namespace tms
