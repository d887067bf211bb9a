// Host memory for backups: where it comes from, how it is made DMA-ready,
// pooled and given back.
//
// Blocks. Host memory is taken in blocks of anonymous memory
// (Driver::host_alloc: mmap + MADV_HUGEPAGE on CUDA) that are
// page-locked with Driver::host_register in chunks of `register_chunk_bytes`,
// so the copy engine moves data to and from them directly, at the rate of
// memory from cuMemHostAlloc, without cuMemHostAlloc's cost (it allocates
// and page-locks everything before returning, several times slower
// than faulting in THP memory and registering it, and nothing can overlap
// it). Both host kinds use such blocks; they differ in what
// happens when a block is no longer needed:
//   kPinned  returned to the pool while retention is on (see below), else freed;
//   kMmap    always unregistered and unmapped, so the memory goes back to the OS.
//
// Preparation overlaps the copies. A fresh block's chunks are faulted in
// (a store per page: the kernel zeroes huge pages in parallel this way) by
// `prepare_threads` worker threads in address order, and registered, as
// they are faulted in, by one of those workers at a time while the others
// go on faulting (the driver serializes registration anyway). A copy
// into a chunk not registered yet is handed to the worker that registers
// it, which queues it right after (HostBuffer::run_when_ready), or
// the caller waits for that chunk (HostBuffer::copy_extent). Handing over is
// what the copy pipeline does: cuMemHostRegister holds a lock in the driver
// that a copy queued from another thread waits behind, so a caller queueing
// each chunk's copy itself falls behind the workers, and more workers make
// that worse (bench/probes/cold_pause_probe.cpp). Copies never span two
// registered chunks. When the system refuses to start these
// threads, the ones it gave do the work, or acquire does it before it
// returns (common/start_threads.h).
//
// Batching. One pause asks for all its buffers at once (acquire). Requests
// of at least `small_request_bytes` get a block each; smaller ones are
// packed into shared blocks of up to `arena_bytes`, so thousands of small
// tensors cost a few mmap/register calls instead of thousands. Only requests
// of one group (the engine's tag) share a block, so a resume of one tag
// leaves no block half used by it. A block lives until the last buffer cut
// from it is released; space of a released buffer inside a block that still
// has others is reused only with the block (bounded by arena_bytes per
// shared block).
//
// Pool. While pooling is on (the engine turns it on with retain_cpu_backup),
// kPinned blocks whose buffers are all released are kept, up to
// `pool_limit_bytes`, and reused by later requests, so a warm pause copies
// at copy-engine speed even when the allocations were freed and made again.
// Turning pooling off frees the pool.
//
// Room. Before fresh blocks are mapped and faulted in, acquire checks that
// they fit in the host memory this process may still use (its memory
// cgroup and MemAvailable, backup/host_limits.h); if not, it waits for
// background releases, frees the pool and measures again, then throws
// OutOfMemory instead of letting the kernel's OOM killer end the process.
//
// Releasing. Freeing a block unregisters each chunk and gives it back to
// the OS (host_free of the chunk's range). HostBuffer::reset does it on the
// releasing thread, or on a background thread when `background_release` is
// on and that thread could be started (drain() waits for it). give_back()
// (a resume's backups) does it before it returns, as fast as the driver
// allows: cuMemHostUnregister waits for copies in flight, so unregistering
// cannot overlap the restore copies, but munmap of one chunk overlaps the
// unregistration of the next (a second thread unmaps). A failed release is
// kept and retried by retry_failed(); failed_releases() counts them.
//
// Thread safety: every public member may be called from any thread. Lock
// order: callers' locks (the engine's), then this class's mutex; no driver
// call runs under it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backup/host_limits.h"
#include "backup/host_memory_kind.h"
#include "driver/driver.h"

namespace tms {

class HostMemory;
struct HostBlock;
class Preparation;

/// A contiguous, page-aligned piece of a host block holding one backup.
/// Move-only; gives its piece back when destroyed or reset.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  ~HostBuffer() { reset(); }

  [[nodiscard]] std::uint8_t* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] HostMemoryKind kind() const { return kind_; }
  [[nodiscard]] bool empty() const { return data_ == nullptr; }

  /// How many of the `size` bytes from `offset` one copy may move: up to the
  /// end of the registered chunk holding `offset`. Waits until that chunk
  /// is registered when its block is still being prepared.
  /// @throws what preparing the block threw (e.g. DriverError from
  /// host_register, OutOfMemory).
  [[nodiscard]] std::size_t copy_extent(std::size_t offset, std::size_t size) const;
  /// Whether this buffer's block is still being prepared (copies into it
  /// may be handed over with run_when_ready).
  [[nodiscard]] bool being_prepared() const;
  /// copy_extent without waiting.
  [[nodiscard]] std::size_t chunk_extent(std::size_t offset, std::size_t size) const;
  /// While the chunk holding `offset` is still being prepared, moves `task`
  /// to the thread preparing it, which runs it right after registering the
  /// chunk, and returns true; returns false (`task` untouched) when the
  /// chunk is ready, for the caller to run it. A task that throws stops the
  /// preparation with its error. @throws what preparing threw.
  bool run_when_ready(std::size_t offset, std::function<void()>& task) const;
  /// Waits until this buffer's batch is prepared and every task handed over
  /// ran. @throws what preparing or a task threw.
  void wait_prepared() const;
  /// Stops preparing this buffer's batch and waits for its threads: no task
  /// handed over starts after this returns (those not run are dropped).
  void stop_preparing() const noexcept;

  /// Gives the piece back now. Never fails: a block that cannot be freed
  /// is kept by HostMemory and retried (HostMemory::failed_releases).
  void reset() noexcept;

 private:
  friend class HostMemory;
  /// Index of the registered chunk holding `offset`, within the block.
  [[nodiscard]] std::size_t chunk_index(std::size_t offset) const;

  HostMemory* owner_ = nullptr;
  HostBlock* block_ = nullptr;
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  HostMemoryKind kind_ = HostMemoryKind::kPinned;
};

struct HostRequest {
  std::size_t size = 0;
  HostMemoryKind kind = HostMemoryKind::kPinned;
  /// Requests of different groups never share a block (the engine passes
  /// one group per tag).
  std::size_t group = 0;
};

/// The answer to HostMemory::acquire: one buffer per request, and the
/// preparation of fresh blocks still running in the background.
class HostBatch {
 public:
  HostBatch();
  HostBatch(HostBatch&&) noexcept;
  HostBatch& operator=(HostBatch&&) noexcept;
  /// Stops the preparation (and waits for its threads) before the buffers
  /// still here are given back.
  ~HostBatch();

  /// Waits until every fresh block is registered. @throws what preparing
  /// threw.
  void wait_all();

  std::vector<HostBuffer> buffers;  ///< in request order

 private:
  friend class HostMemory;
  std::unique_ptr<Preparation> preparation_;  // destroyed before `buffers`
};

struct HostMemoryOptions {
  std::size_t register_chunk_bytes = std::size_t{64} << 20;
  /// Threads that fault in and register fresh blocks; 0: min(16, cores).
  /// 1 (or none could be started): done on the calling thread before
  /// acquire returns.
  unsigned prepare_threads = 0;
  /// Requests below this share blocks (up to arena_bytes), so that many
  /// medium backups, such as torch's 20 MiB segments of small tensors, cost
  /// a few mmap and register calls rather than one block each.
  std::size_t small_request_bytes = std::size_t{64} << 20;
  std::size_t arena_bytes = std::size_t{256} << 20;
  std::size_t pool_limit_bytes = std::size_t{8} << 30;
  /// Frees released blocks on a thread of their own (inline when it
  /// cannot be started).
  bool background_release = false;
  /// How much host memory may still be faulted in; empty: this process's
  /// memory cgroup and MemAvailable (read_host_memory_room("/")).
  HostMemoryRoomSource memory_room;
};

class HostMemory {
 public:
  HostMemory(Driver& driver, HostMemoryOptions options = {});
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;
  /// Waits for background releases, then frees the pool and every block
  /// it still holds (failures are logged). Every HostBuffer must be gone.
  ~HostMemory();

  [[nodiscard]] const HostMemoryOptions& options() const { return options_; }

  /// Buffers for `requests`, from the pool first (kPinned, pooling on),
  /// else from fresh blocks whose preparation starts now; wait for it
  /// through HostBuffer::copy_extent or HostBatch::wait_all.
  /// @throws OutOfMemory (also when the fresh blocks do not fit in the
  /// room the memory limits leave, with bytes needed and available),
  /// DriverError; nothing is held then.
  HostBatch acquire(const std::vector<HostRequest>& requests);
  /// One buffer, fully prepared. @throws as acquire and wait_all.
  HostBuffer acquire_one(std::size_t size, HostMemoryKind kind);

  /// Pooling keeps released kPinned blocks for reuse; turning it off frees
  /// the pool.
  void set_pooling(bool on);
  /// Frees the pool now.
  void trim() noexcept;
  /// Gives `buffers` back and returns once the memory of every block that
  /// no buffer uses any more (and that the pool does not keep) is back with
  /// the OS. Never fails: a block that cannot be freed is kept and retried
  /// (failed_releases). Lock order as for HostBuffer::reset.
  void give_back(std::vector<HostBuffer> buffers) noexcept;
  /// Waits until background releases queued so far are done.
  void drain();
  /// Tries again to free blocks whose release failed.
  void retry_failed() noexcept;

  [[nodiscard]] std::size_t failed_releases() const;

 private:
  friend class HostBuffer;

  void release(HostBlock* block) noexcept;
  /// One buffer of `block` fewer: the block if that was its last and the
  /// pool does not take it (to be freed by the caller), else nullptr.
  std::unique_ptr<HostBlock> drop(HostBlock* block) noexcept;
  /// @throws OutOfMemory when `bytes` of fresh memory do not fit (Room),
  /// even after background releases and the pool were given back.
  void check_room(std::size_t bytes);
  /// Unregisters and frees, chunk by chunk; keeps partial progress and
  /// throws on failure.
  void free_block(HostBlock& block);
  /// Gives chunk `chunk` of `block` (already unregistered) back to the OS.
  void unmap_chunk(HostBlock& block, std::size_t chunk);
  /// free_block, or keep the block for retry_failed.
  void free_or_keep(std::unique_ptr<HostBlock> block) noexcept;
  /// Frees `blocks` now: unregisters on this thread while a second one
  /// unmaps what is unregistered; keeps what fails for retry_failed.
  void free_now(std::vector<std::unique_ptr<HostBlock>> blocks) noexcept;
  /// Keeps `block` for retry_failed.
  void keep_failed(std::unique_ptr<HostBlock> block) noexcept;
  void background_loop();
  /// A slice of `block` for `size` bytes (under mutex_).
  HostBuffer carve(HostBlock& block, std::size_t size, HostMemoryKind kind);

  Driver& driver_;
  HostMemoryOptions options_;

  mutable std::mutex mutex_;
  std::map<HostBlock*, std::unique_ptr<HostBlock>> live_;  // blocks with buffers out
  std::vector<std::unique_ptr<HostBlock>> pool_;
  std::size_t pooled_bytes_ = 0;
  bool pooling_ = false;
  std::vector<std::unique_ptr<HostBlock>> failed_;

  // Background release.
  std::condition_variable queue_changed_;
  std::vector<std::unique_ptr<HostBlock>> queue_;
  std::size_t releasing_ = 0;  // blocks the background thread is freeing now
  bool stopping_ = false;
  std::thread releaser_;
};

}  // namespace tms
