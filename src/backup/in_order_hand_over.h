// Work into fresh host memory, run in the order it was added, each piece once
// the host chunks it writes are registered.
//
// Why. Queueing a copy into host memory from the pausing thread while a
// preparing thread registers the next chunk waits behind the driver's
// registration lock, so a pause that waits for each chunk and queues its
// copy itself falls behind the preparation (host_memory.h). Plain copies are
// handed one by one to the thread that registers their chunk, in any order
// (QueuedCopies). Compressed backups cannot be: each batch is encoded into a
// device slot that a later batch on the same lane reuses, so the encode and
// copy of batch i must be on its stream before batch i + lanes is. This
// keeps that order and still hands the work over: the front of the queue runs
// wherever its memory is registered (here, or on the registering thread,
// which then goes on down the queue); nothing after it runs before it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

#include "backup/host_memory.h"

namespace tms {

class InOrderHandOver {
 public:
  InOrderHandOver() = default;
  InOrderHandOver(const InOrderHandOver&) = delete;
  InOrderHandOver& operator=(const InOrderHandOver&) = delete;
  /// Unless wait() returned: runs no more work and stops the preparation of
  /// every buffer that was handed work, so none of it starts after this
  /// returns (what already ran stays queued on its streams: the caller
  /// drains them).
  ~InOrderHandOver();

  /// Runs `work` after all work added before it, once bytes [offset, offset
  /// + size) of `buffer` are registered: on this thread if they are (and
  /// nothing before it waits), else on the thread that registers them.
  /// @throws what a work run here threw, what preparing the buffer threw, or
  /// the first error of earlier work; nothing added after an error runs.
  void add(const HostBuffer& buffer, std::size_t offset, std::size_t size,
           std::function<void()> work);
  /// Returns once every work added ran. @throws as add.
  void wait();

 private:
  struct Pending {
    const HostBuffer* buffer;
    std::size_t offset;
    std::size_t size;
    std::function<void()> work;
  };

  /// Runs work from the front while its memory is registered; when it is
  /// not, hands a call of itself to the chunk that is not and returns.
  /// Under mutex_; never throws (errors go to error_).
  void pump() noexcept;
  /// Whether all of `pending`'s memory is registered; if not, the rest of
  /// the queue was handed to its first chunk that is not.
  bool ready_or_handed_over(const Pending& pending);
  void pump_from_preparation() noexcept;
  void rethrow_error() const;

  std::mutex mutex_;
  std::deque<Pending> queue_;
  /// A pump is handed to this buffer's preparation: add() queues only.
  const HostBuffer* waiting_on_ = nullptr;
  /// Every buffer handed a pump (recorded before the hand-over), stopped
  /// when unwinding.
  std::vector<const HostBuffer*> handed_;
  std::exception_ptr error_;
  bool waited_ = false;
  /// Set by the destructor: pumps from preparing threads do nothing.
  bool stopping_ = false;
};

}  // namespace tms
