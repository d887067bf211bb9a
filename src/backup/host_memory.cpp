#include "backup/host_memory.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <new>
#include <string>
#include <utility>

#include "backup/ordered_worker.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/sizes.h"
#include "common/start_threads.h"

namespace tms {
namespace {

constexpr std::size_t kPage = 4096;

// One per core up to 16: the kernel zeroes fresh pages on the faulting
// thread, so a cold pause gains from every core, and with copies handed to
// the preparing threads no caller queueing copies falls behind them.
unsigned default_threads() {
  const unsigned cores = std::thread::hardware_concurrency();
  return std::clamp(cores, 1u, 16u);
}

}  // namespace

/// One run of host memory, registered in chunks.
struct HostBlock {
  std::uint8_t* base = nullptr;
  std::size_t capacity = 0;
  HostMemoryKind kind = HostMemoryKind::kPinned;
  std::size_t group = 0;                 // HostRequest::group of its buffers
  std::size_t used = 0;                  // bytes cut into buffers (bump)
  std::size_t live = 0;                  // buffers out
  std::vector<std::uint8_t> registered;  // per chunk
  // Per chunk: given back to the OS. While a block is being freed, one
  // thread writes `registered` and another `unmapped` (HostMemory::free_now).
  std::vector<std::uint8_t> unmapped;
  // While fresh chunks are being registered. Atomic: work handed over runs
  // on the threads of another batch's preparation (InOrderHandOver) and
  // asks whether this block is still being prepared while the thread that
  // found it prepared clears this (Preparation::detach_blocks). Each use
  // loads it once.
  std::atomic<Preparation*> preparing{nullptr};
  std::size_t first_chunk = 0;  // this block's first chunk in `preparing`

  [[nodiscard]] bool fully_registered() const {
    return std::all_of(registered.begin(), registered.end(), [](std::uint8_t r) { return r; });
  }
  [[nodiscard]] bool fully_unmapped() const {
    return std::all_of(unmapped.begin(), unmapped.end(), [](std::uint8_t u) { return u; });
  }
};

/// Faults in and registers the chunks of fresh blocks on worker threads (or
/// on the caller's thread with one thread, or none started). Every worker
/// faults chunks in, in address order; one of them at a time registers the
/// chunks faulted in so far, in the order they were faulted in, while the
/// others go on faulting. cuMemHostRegister holds a lock in the driver, so
/// a second registering thread would mostly wait there instead of zeroing
/// pages. Work handed over for a chunk (hand_over) runs on the thread that
/// registered it, right after.
class Preparation {
 public:
  struct Chunk {
    HostBlock* block;
    std::size_t index;
  };

  Preparation(Driver& driver, std::vector<Chunk> chunks, std::size_t chunk_bytes)
      : driver_(driver),
        chunks_(std::move(chunks)),
        chunk_bytes_(chunk_bytes),
        done_(chunks_.size(), 0),
        handed_(chunks_.size()) {
    faulted_.reserve(chunks_.size());  // so that adding under the lock never allocates
  }

  Preparation(const Preparation&) = delete;
  Preparation& operator=(const Preparation&) = delete;

  ~Preparation() {
    stop();
    detach_blocks();
  }

  /// Stops the workers and waits for them: nothing handed over runs after,
  /// and waiting for what was left undone throws instead of blocking.
  void stop() noexcept {
    cancel_.store(true);
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    std::lock_guard lock(mutex_);
    if (error_ == nullptr && finished_ < chunks_.size()) {
      try {
        throw InvalidState("host memory preparation was stopped");
      } catch (...) {  // bad_alloc instead serves as well
        error_ = std::current_exception();
      }
      changed_.notify_all();
    }
  }

  [[nodiscard]] std::size_t chunk_count() const { return chunks_.size(); }

  /// Starts up to `threads` workers; how many did (0: the caller calls run_here).
  std::size_t start(std::size_t threads) noexcept {
    return start_threads(threads_, std::min(threads, chunks_.size()), [this] { work(); });
  }

  /// Prepares every chunk on the calling thread. @throws the first error.
  void run_here() {
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      fault_in(i);
      register_chunk(i);
    }
    detach_blocks();
  }

  /// Queues `task` to run right after chunk `index` is registered; false
  /// (task untouched) when it is registered already. @throws what preparing threw.
  bool hand_over(std::size_t index, std::function<void()>& task) {
    std::lock_guard lock(mutex_);
    if (error_ != nullptr) std::rethrow_exception(error_);
    if (done_[index] != 0) return false;
    handed_[index].push_back(std::move(task));
    return true;
  }

  void wait(std::size_t index) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return done_[index] != 0 || error_ != nullptr; });
    if (done_[index] == 0) std::rethrow_exception(error_);
  }

  void wait_all() {
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return finished_ == chunks_.size() || error_ != nullptr; });
      if (error_ != nullptr) std::rethrow_exception(error_);
    }
    detach_blocks();
  }

 private:
  void work() {
    for (;;) {
      const std::size_t index = next_.fetch_add(1);
      if (index >= chunks_.size() || cancel_.load()) return;
      fault_in(index);
      try {
        register_faulted(index);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (error_ == nullptr) error_ = std::current_exception();
        cancel_.store(true);
        changed_.notify_all();
        return;
      }
    }
  }

  /// One store per page faults the chunk in on this thread, so the
  /// kernel's page zeroing runs on several cores at once.
  void fault_in(std::size_t index) const {
    const Chunk& chunk = chunks_[index];
    std::uint8_t* start = chunk.block->base + chunk.index * chunk_bytes_;
    for (std::size_t offset = 0; offset < chunk_size(index); offset += kPage) {
      static_cast<volatile std::uint8_t*>(start)[offset] = 0;
    }
  }

  /// Chunk `index` is faulted in. Unless another thread is registering
  /// (it takes this chunk too: it looks for more before it stops), registers
  /// it and every chunk faulted in meanwhile. After a failure the others
  /// stop, so no one registers again and `registering_` may stay set.
  void register_faulted(std::size_t index) {
    std::unique_lock lock(mutex_);
    faulted_.push_back(index);
    if (registering_) return;
    registering_ = true;
    while (registered_next_ < faulted_.size() && !cancel_.load()) {
      const std::size_t next = faulted_[registered_next_++];
      lock.unlock();
      register_chunk(next);
      lock.lock();
    }
    registering_ = false;
  }

  void register_chunk(std::size_t index) {
    const Chunk& chunk = chunks_[index];
    driver_.host_register(chunk.block->base + chunk.index * chunk_bytes_, chunk_size(index));
    std::vector<std::function<void()>> handed;
    {
      std::lock_guard lock(mutex_);
      chunk.block->registered[chunk.index] = 1;
      done_[index] = 1;
      handed.swap(handed_[index]);
      changed_.notify_all();
    }
    for (std::function<void()>& task : handed) task();
    std::lock_guard lock(mutex_);
    ++finished_;
    changed_.notify_all();
  }

  [[nodiscard]] std::size_t chunk_size(std::size_t index) const {
    const Chunk& chunk = chunks_[index];
    return std::min(chunk_bytes_, chunk.block->capacity - chunk.index * chunk_bytes_);
  }

  /// Once nothing runs any more, copies need not wait for these blocks.
  void detach_blocks() {
    for (const Chunk& chunk : chunks_) chunk.block->preparing = nullptr;
  }

  Driver& driver_;
  std::vector<Chunk> chunks_;
  std::size_t chunk_bytes_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};  // the next chunk to fault in
  std::atomic<bool> cancel_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::size_t> faulted_;  // chunks faulted in, in that order
  std::size_t registered_next_ = 0;   // faulted_[registered_next_] is the next to register
  bool registering_ = false;          // a thread is in register_faulted's loop
  std::vector<std::uint8_t> done_;    // registered
  std::vector<std::vector<std::function<void()>>> handed_;  // per chunk, until done
  std::size_t finished_ = 0;                                // done, and what was handed over ran
  std::exception_ptr error_;
};

// ---- HostBuffer -------------------------------------------------------------

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  std::swap(owner_, other.owner_);
  std::swap(block_, other.block_);
  std::swap(data_, other.data_);
  std::swap(size_, other.size_);
  std::swap(kind_, other.kind_);
  return *this;
}

std::size_t HostBuffer::chunk_index(std::size_t offset) const {
  const std::size_t position = static_cast<std::size_t>(data_ - block_->base) + offset;
  return position / owner_->options_.register_chunk_bytes;
}

std::size_t HostBuffer::chunk_extent(std::size_t offset, std::size_t size) const {
  const std::size_t position = static_cast<std::size_t>(data_ - block_->base) + offset;
  return std::min(size,
                  (chunk_index(offset) + 1) * owner_->options_.register_chunk_bytes - position);
}

std::size_t HostBuffer::copy_extent(std::size_t offset, std::size_t size) const {
  if (Preparation* preparing = block_->preparing.load(); preparing != nullptr) {
    preparing->wait(block_->first_chunk + chunk_index(offset));
  }
  return chunk_extent(offset, size);
}

bool HostBuffer::being_prepared() const { return block_->preparing != nullptr; }

bool HostBuffer::run_when_ready(std::size_t offset, std::function<void()>& task) const {
  Preparation* preparing = block_->preparing.load();
  if (preparing == nullptr) return false;
  return preparing->hand_over(block_->first_chunk + chunk_index(offset), task);
}

void HostBuffer::wait_prepared() const {
  if (Preparation* preparing = block_->preparing.load(); preparing != nullptr) {
    preparing->wait_all();
  }
}

void HostBuffer::stop_preparing() const noexcept {
  if (Preparation* preparing = block_->preparing.load(); preparing != nullptr) preparing->stop();
}

void HostBuffer::reset() noexcept {
  if (data_ == nullptr) return;
  owner_->release(block_);
  owner_ = nullptr;
  block_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

// ---- HostBatch --------------------------------------------------------------

HostBatch::HostBatch() = default;
HostBatch::HostBatch(HostBatch&&) noexcept = default;
HostBatch& HostBatch::operator=(HostBatch&& other) noexcept {
  if (this != &other) {
    preparation_.reset();  // stop it before our buffers go
    buffers = std::move(other.buffers);
    preparation_ = std::move(other.preparation_);
  }
  return *this;
}

HostBatch::~HostBatch() { preparation_.reset(); }

void HostBatch::wait_all() {
  if (preparation_ != nullptr) preparation_->wait_all();
}

// ---- HostMemory -------------------------------------------------------------

HostMemory::HostMemory(Driver& driver, HostMemoryOptions options)
    : driver_(driver), options_(options) {
  if (options_.register_chunk_bytes < kPage) {
    throw InvalidArgument("host register chunk must be at least 4 KiB");
  }
  options_.register_chunk_bytes = round_up(options_.register_chunk_bytes, kPage);
  if (options_.prepare_threads == 0) options_.prepare_threads = default_threads();
  if (options_.background_release) releaser_ = start_thread_or_none([this] { background_loop(); });
}

HostMemory::~HostMemory() {
  if (releaser_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    queue_changed_.notify_all();
    releaser_.join();
  }
  std::vector<std::unique_ptr<HostBlock>> left;
  for (auto& block : pool_) left.push_back(std::move(block));
  for (auto& block : failed_) left.push_back(std::move(block));
  for (auto& block : queue_) left.push_back(std::move(block));
  for (auto& [raw, block] : live_) {
    log(LogLevel::kWarning, "host backup memory still in use at teardown; freeing it");
    left.push_back(std::move(block));
  }
  for (auto& block : left) {
    try {
      free_block(*block);
    } catch (const std::exception& error) {
      log(LogLevel::kError, std::string("could not free host backup memory: ") + error.what());
    }
  }
}

HostBuffer HostMemory::carve(HostBlock& block, std::size_t size, HostMemoryKind kind) {
  HostBuffer buffer;
  buffer.owner_ = this;
  buffer.block_ = &block;
  buffer.data_ = block.base + block.used;
  buffer.size_ = size;
  buffer.kind_ = kind;
  block.used += round_up(size, kPage);
  ++block.live;
  return buffer;
}

HostBatch HostMemory::acquire(const std::vector<HostRequest>& requests) {
  HostBatch batch;
  batch.buffers.resize(requests.size());
  std::vector<std::size_t> fresh;  // requests that need new memory

  // 1. The pool, for kPinned requests while pooling is on: each request
  //    goes into a block already opened by this batch for its group if it
  //    fits, else into the smallest pooled block it fits in.
  {
    std::lock_guard lock(mutex_);
    std::vector<HostBlock*> opened;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const std::size_t need = round_up(requests[i].size, kPage);
      HostBlock* target = nullptr;
      if (requests[i].kind == HostMemoryKind::kPinned && pooling_) {
        for (HostBlock* block : opened) {
          if (block->group == requests[i].group && block->capacity - block->used >= need) {
            target = block;
            break;
          }
        }
        if (target == nullptr) {
          auto best = pool_.end();
          for (auto it = pool_.begin(); it != pool_.end(); ++it) {
            if ((*it)->capacity >= need &&
                (best == pool_.end() || (*it)->capacity < (*best)->capacity)) {
              best = it;
            }
          }
          if (best != pool_.end()) {
            target = best->get();
            target->group = requests[i].group;
            pooled_bytes_ -= target->capacity;
            live_.emplace(target, std::move(*best));
            pool_.erase(best);
            opened.push_back(target);
          }
        }
      }
      if (target != nullptr) {
        batch.buffers[i] = carve(*target, requests[i].size, requests[i].kind);
      } else {
        fresh.push_back(i);
      }
    }
  }
  if (fresh.empty()) return batch;

  // 2. Fresh blocks: a block per large request, small ones packed together
  //    (per kind and group) into blocks of up to arena_bytes.
  std::vector<std::pair<HostMemoryKind, std::size_t>> arenas;  // (kind, group), first seen first
  for (const std::size_t i : fresh) {
    const std::pair key(requests[i].kind, requests[i].group);
    if (std::find(arenas.begin(), arenas.end(), key) == arenas.end()) arenas.push_back(key);
  }
  std::vector<std::vector<std::size_t>> groups;
  for (const auto& [kind, group] : arenas) {
    std::vector<std::size_t> arena;
    std::size_t arena_size = 0;
    for (const std::size_t i : fresh) {
      if (requests[i].kind != kind || requests[i].group != group) continue;
      const std::size_t need = round_up(requests[i].size, kPage);
      if (requests[i].size >= options_.small_request_bytes) {
        groups.push_back({i});
        continue;
      }
      if (!arena.empty() && arena_size + need > options_.arena_bytes) {
        groups.push_back(std::move(arena));
        arena.clear();
        arena_size = 0;
      }
      arena.push_back(i);
      arena_size += need;
    }
    if (!arena.empty()) groups.push_back(std::move(arena));
  }
  std::sort(groups.begin(), groups.end());  // request order, which is copy order

  std::size_t fresh_bytes = 0;
  for (const std::vector<std::size_t>& group : groups) {
    for (const std::size_t i : group) fresh_bytes += round_up(requests[i].size, kPage);
  }
  check_room(fresh_bytes);

  std::vector<Preparation::Chunk> chunks;
  for (const std::vector<std::size_t>& group : groups) {
    std::size_t capacity = 0;
    for (const std::size_t i : group) capacity += round_up(requests[i].size, kPage);
    auto block = std::make_unique<HostBlock>();
    block->kind = requests[group.front()].kind;
    block->group = requests[group.front()].group;
    block->capacity = capacity;
    // On failure the buffers cut so far go back with `batch`.
    block->base = static_cast<std::uint8_t*>(driver_.host_alloc(capacity));
    const std::size_t chunk_count =
        (capacity + options_.register_chunk_bytes - 1) / options_.register_chunk_bytes;
    block->registered.assign(chunk_count, 0);
    block->unmapped.assign(chunk_count, 0);
    block->first_chunk = chunks.size();
    for (std::size_t c = 0; c < chunk_count; ++c) chunks.push_back({block.get(), c});
    std::lock_guard lock(mutex_);
    HostBlock& placed = *live_.emplace(block.get(), std::move(block)).first->second;
    for (const std::size_t i : group) {
      batch.buffers[i] = carve(placed, requests[i].size, requests[i].kind);
    }
  }

  // 3. Fault in and register them.
  auto preparation =
      std::make_unique<Preparation>(driver_, std::move(chunks), options_.register_chunk_bytes);
  for (const std::vector<std::size_t>& group : groups) {
    batch.buffers[group.front()].block_->preparing = preparation.get();
  }
  Preparation& running = *preparation;
  batch.preparation_ = std::move(preparation);
  if (options_.prepare_threads < 2 || running.chunk_count() < 2 ||
      running.start(options_.prepare_threads) == 0) {
    running.run_here();  // on failure `batch` gives everything back
  }
  return batch;
}

void HostMemory::check_room(std::size_t bytes) {
  auto measure = [this] {
    return options_.memory_room ? options_.memory_room() : read_host_memory_room("/");
  };
  std::optional<HostMemoryRoom> room = measure();
  if (!room || bytes <= room->bytes) return;
  // Before refusing, give back what is only on its way out or kept for
  // speed: background releases still running and the pool's idle blocks.
  drain();
  trim();
  room = measure();
  if (!room || bytes <= room->bytes) return;
  throw OutOfMemory("host backup",
                    "backups need " + describe_bytes(bytes) + " of new host memory, but only " +
                        describe_bytes(room->bytes) + " is available (" + room->source +
                        "); nothing was changed. Free host memory or raise the limit, or use "
                        "disk backup for large allocations",
                    bytes, room->bytes);
}

HostBuffer HostMemory::acquire_one(std::size_t size, HostMemoryKind kind) {
  HostBatch batch = acquire({{size, kind}});
  batch.wait_all();
  return std::move(batch.buffers.front());
}

std::unique_ptr<HostBlock> HostMemory::drop(HostBlock* block) noexcept {
  std::lock_guard lock(mutex_);
  if (--block->live > 0) return nullptr;
  auto it = live_.find(block);
  std::unique_ptr<HostBlock> dead = std::move(it->second);
  live_.erase(it);
  if (dead->kind == HostMemoryKind::kPinned && pooling_ && dead->preparing == nullptr &&
      dead->fully_registered() && pooled_bytes_ + dead->capacity <= options_.pool_limit_bytes) {
    try {
      pool_.push_back(std::move(dead));
    } catch (const std::bad_alloc&) {
      return dead;  // unchanged (a failed push_back moves nothing): freed instead
    }
    pool_.back()->used = 0;
    pooled_bytes_ += pool_.back()->capacity;
    return nullptr;
  }
  return dead;
}

void HostMemory::release(HostBlock* block) noexcept {
  std::unique_ptr<HostBlock> dead = drop(block);
  if (dead == nullptr) return;
  if (releaser_.joinable()) {
    std::lock_guard lock(mutex_);
    try {
      queue_.push_back(std::move(dead));
      queue_changed_.notify_all();
      return;
    } catch (const std::bad_alloc&) {  // no memory to queue it: freed here below
    }
  }
  free_or_keep(std::move(dead));
}

void HostMemory::give_back(std::vector<HostBuffer> buffers) noexcept {
  std::vector<std::unique_ptr<HostBlock>> dead;
  try {
    dead.reserve(buffers.size());
  } catch (const std::exception&) {
    return;  // out of memory: `buffers` goes back one by one (HostBuffer::reset)
  }
  for (HostBuffer& buffer : buffers) {
    if (buffer.empty()) continue;
    std::unique_ptr<HostBlock> block = drop(buffer.block_);
    buffer.owner_ = nullptr;  // given back here, not by its destructor
    buffer.block_ = nullptr;
    buffer.data_ = nullptr;
    buffer.size_ = 0;
    if (block != nullptr) dead.push_back(std::move(block));
  }
  free_now(std::move(dead));
}

void HostMemory::free_now(std::vector<std::unique_ptr<HostBlock>> blocks) noexcept {
  std::size_t chunks = 0;
  for (const auto& block : blocks) chunks += block->registered.size();
  if (chunks < 2) {  // nothing to overlap
    for (auto& block : blocks) free_or_keep(std::move(block));
    return;
  }
  {
    // cuMemHostUnregister runs at about the restore copy's rate and does
    // not get faster with more threads; munmap is several times faster
    // (docs/performance.md). So this thread unregisters while the worker
    // unmaps behind it.
    OrderedWorker<std::pair<HostBlock*, std::size_t>> unmapper([this](const auto& chunk) {
      try {
        unmap_chunk(*chunk.first, chunk.second);
      } catch (const std::exception& error) {
        log(LogLevel::kWarning,
            std::string("freeing host backup memory failed, will retry: ") + error.what());
      }
    });
    for (auto& block : blocks) {
      for (std::size_t c = 0; c < block->registered.size(); ++c) {
        if (block->registered[c] != 0) {
          try {
            driver_.host_unregister(block->base + c * options_.register_chunk_bytes);
            block->registered[c] = 0;
          } catch (const std::exception& error) {
            log(LogLevel::kWarning,
                std::string("unregistering host backup memory failed, will retry: ") +
                    error.what());
            continue;  // still registered: not unmapped now
          }
        }
        if (block->unmapped[c] == 0) unmapper.push({block.get(), c});
      }
    }
  }  // every chunk handed over is done
  for (auto& block : blocks) {
    if (!block->fully_unmapped()) keep_failed(std::move(block));
  }
}

void HostMemory::free_block(HostBlock& block) {
  // Unregister before unmapping; each step is recorded, so a retry after a
  // failure continues where this one stopped.
  for (std::size_t c = 0; c < block.registered.size(); ++c) {
    if (block.registered[c] != 0) {
      driver_.host_unregister(block.base + c * options_.register_chunk_bytes);
      block.registered[c] = 0;
    }
    unmap_chunk(block, c);
  }
}

void HostMemory::unmap_chunk(HostBlock& block, std::size_t chunk) {
  if (block.unmapped[chunk] != 0) return;
  const std::size_t offset = chunk * options_.register_chunk_bytes;
  driver_.host_free(block.base + offset,
                    std::min(options_.register_chunk_bytes, block.capacity - offset));
  block.unmapped[chunk] = 1;
}

void HostMemory::free_or_keep(std::unique_ptr<HostBlock> block) noexcept {
  try {
    free_block(*block);
  } catch (const std::exception& error) {
    try {
      log(LogLevel::kWarning,
          std::string("freeing host backup memory failed, will retry: ") + error.what());
    } catch (const std::bad_alloc&) {
      log(LogLevel::kWarning, "freeing host backup memory failed, will retry");
    }
    keep_failed(std::move(block));
  }
}

void HostMemory::keep_failed(std::unique_ptr<HostBlock> block) noexcept {
  std::lock_guard lock(mutex_);
  try {
    failed_.push_back(std::move(block));
  } catch (const std::bad_alloc&) {
    // No memory to remember it (a failed push_back moves nothing): mapped until exit.
    log(LogLevel::kWarning, "host backup memory could not be freed and is kept until exit");
    (void)block.release();
  }
}

void HostMemory::background_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    queue_changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to do
    std::vector<std::unique_ptr<HostBlock>> work;
    work.swap(queue_);
    releasing_ = work.size();
    lock.unlock();
    for (auto& block : work) free_or_keep(std::move(block));
    lock.lock();
    releasing_ = 0;
    queue_changed_.notify_all();
  }
}

void HostMemory::drain() {
  std::unique_lock lock(mutex_);
  queue_changed_.wait(lock, [&] { return queue_.empty() && releasing_ == 0; });
}

void HostMemory::set_pooling(bool on) {
  {
    std::lock_guard lock(mutex_);
    pooling_ = on;
  }
  if (!on) trim();
}

void HostMemory::trim() noexcept {
  std::vector<std::unique_ptr<HostBlock>> pooled;
  {
    std::lock_guard lock(mutex_);
    pooled.swap(pool_);
    pooled_bytes_ = 0;
  }
  for (auto& block : pooled) free_or_keep(std::move(block));
}

void HostMemory::retry_failed() noexcept {
  std::vector<std::unique_ptr<HostBlock>> failed;
  {
    std::lock_guard lock(mutex_);
    failed.swap(failed_);
  }
  for (auto& block : failed) free_or_keep(std::move(block));
}

std::size_t HostMemory::failed_releases() const {
  std::lock_guard lock(mutex_);
  return failed_.size();
}

}  // namespace tms
