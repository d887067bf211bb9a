#include "backup/io_threads.h"

#include <exception>

#include "common/start_threads.h"

namespace tms {

IoThreads::IoThreads(std::size_t threads, std::size_t slots) : busy_(slots, false) {
  // Fewer threads (none: run() runs each task here) mean fewer transfers in
  // flight, the same result.
  start_threads(threads_, threads, [this] { work(); });
}

IoThreads::~IoThreads() {
  wait_quietly();
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void IoThreads::run(std::size_t slot, std::function<void()> task) {
  if (threads_.empty()) {
    {
      std::lock_guard lock(mutex_);
      if (failure_) std::rethrow_exception(failure_);
    }
    try {
      task();
    } catch (...) {
      std::lock_guard lock(mutex_);
      fail(std::current_exception());
      throw;
    }
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (failure_) std::rethrow_exception(failure_);
    busy_.at(slot) = true;
    queue_.emplace_back(slot, std::move(task));
  }
  work_ready_.notify_one();
}

void IoThreads::wait(std::size_t slot) {
  std::unique_lock lock(mutex_);
  task_done_.wait(lock, [&] { return !busy_.at(slot); });
  if (failure_) std::rethrow_exception(failure_);
}

void IoThreads::wait_all() {
  std::unique_lock lock(mutex_);
  task_done_.wait(lock, [&] { return queue_.empty() && running_ == 0; });
  if (failure_) std::rethrow_exception(failure_);
}

void IoThreads::wait_quietly() noexcept {
  std::unique_lock lock(mutex_);
  drop_queued();
  task_done_.wait(lock, [&] { return running_ == 0; });
}

void IoThreads::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping
    auto [slot, task] = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    task = nullptr;  // whatever the task holds goes before the slot is idle
    lock.lock();
    --running_;
    busy_[slot] = false;
    if (error) fail(error);
    task_done_.notify_all();
  }
}

void IoThreads::fail(std::exception_ptr error) {
  if (!failure_) failure_ = std::move(error);
  drop_queued();
}

void IoThreads::drop_queued() {
  for (const auto& queued : queue_) busy_[queued.first] = false;
  queue_.clear();
  task_done_.notify_all();
}

}  // namespace tms
