#include "backup/in_order_hand_over.h"

#include <utility>

namespace tms {

InOrderHandOver::~InOrderHandOver() {
  if (waited_) return;
  std::vector<const HostBuffer*> handed;
  {
    std::lock_guard lock(mutex_);
    // From here on a pump a preparing thread starts runs nothing and hands
    // nothing on: one run while the loop below waits for a preparation
    // could hand the queue to another batch's, not in `handed`, which would
    // run it after this returned.
    stopping_ = true;
    handed.swap(handed_);
  }
  // Not under mutex_: stopping joins the preparing threads, and one of them
  // may be waiting for it to run the queue.
  for (const HostBuffer* buffer : handed) buffer->stop_preparing();
}

void InOrderHandOver::add(const HostBuffer& buffer, std::size_t offset, std::size_t size,
                          std::function<void()> work) {
  std::lock_guard lock(mutex_);
  rethrow_error();
  waited_ = false;
  queue_.push_back({&buffer, offset, size, std::move(work)});
  if (waiting_on_ == nullptr) pump();
  rethrow_error();
}

void InOrderHandOver::wait() {
  std::unique_lock lock(mutex_);
  while (error_ == nullptr && !queue_.empty()) {
    const HostBuffer* buffer = waiting_on_;
    if (buffer == nullptr) {
      pump();
      continue;
    }
    lock.unlock();
    // Returns once the buffer's batch is prepared and what was handed over
    // ran: the pump handed to it, and any it handed on within the batch.
    std::exception_ptr failed;
    try {
      buffer->wait_prepared();
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    if (failed != nullptr && error_ == nullptr) error_ = failed;
    // The batch is prepared: nothing is handed to it any more.
    if (waiting_on_ == buffer) waiting_on_ = nullptr;
  }
  rethrow_error();
  waited_ = true;
}

void InOrderHandOver::pump() noexcept {
  while (error_ == nullptr && !queue_.empty()) {
    try {
      if (!ready_or_handed_over(queue_.front())) return;
      std::function<void()> work = std::move(queue_.front().work);
      queue_.pop_front();
      work();
    } catch (...) {
      error_ = std::current_exception();
    }
  }
}

bool InOrderHandOver::ready_or_handed_over(const Pending& pending) {
  if (!pending.buffer->being_prepared()) return true;
  for (std::size_t done = 0; done < pending.size;) {
    const std::size_t at = pending.offset + done;
    const bool record = handed_.empty() || handed_.back() != pending.buffer;
    if (record) handed_.push_back(pending.buffer);
    std::function<void()> resume = [this] { pump_from_preparation(); };
    if (pending.buffer->run_when_ready(at, resume)) {
      waiting_on_ = pending.buffer;
      return false;
    }
    if (record) handed_.pop_back();  // nothing handed over: the chunk is ready
    done += pending.buffer->chunk_extent(at, pending.size - done);
  }
  return true;
}

void InOrderHandOver::pump_from_preparation() noexcept {
  std::lock_guard lock(mutex_);
  if (stopping_) return;  // unwinding: see ~InOrderHandOver
  waiting_on_ = nullptr;
  pump();
}

void InOrderHandOver::rethrow_error() const {
  if (error_ != nullptr) std::rethrow_exception(error_);
}

}  // namespace tms
