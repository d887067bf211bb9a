// A thread that handles items in the order they are handed over, so that a
// caller can pipeline two kinds of work, or hand work off and go on:
// HostMemory unregisters the chunks of a block on its own thread while an
// OrderedWorker unmaps the chunks already unregistered (munmap of one chunk
// overlaps the unregistration of the next), and disk backup closes the
// descriptors of restored backup files on one (backup/disk_backup.h).
// Without a thread (it could not be started) or without memory for its
// queue, push() handles the item on the caller's thread.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/start_threads.h"

namespace tms {

template <typename Item>
class OrderedWorker {
 public:
  /// `handle` must not throw; it runs on the worker thread (or inline).
  explicit OrderedWorker(std::function<void(const Item&)> handle)
      : handle_(std::move(handle)), thread_(start_thread_or_none([this] { run(); })) {}
  OrderedWorker(const OrderedWorker&) = delete;
  OrderedWorker& operator=(const OrderedWorker&) = delete;
  ~OrderedWorker() { finish(); }

  void push(const Item& item) noexcept {
    if (thread_.joinable()) {
      try {
        std::lock_guard lock(mutex_);
        queue_.push_back(item);
        changed_.notify_one();
        return;
      } catch (const std::exception&) {
        // No memory for the queue: handle it here.
      }
    }
    handle_(item);
  }

  /// Whether items pushed are still queued or being handled.
  [[nodiscard]] bool busy() {
    std::lock_guard lock(mutex_);
    return !queue_.empty() || handling_;
  }

  /// Returns when every item pushed so far has been handled; the thread
  /// stays.
  void wait_idle() noexcept {
    if (!thread_.joinable()) return;
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return queue_.empty() && !handling_; });
  }

  /// Returns when every item pushed has been handled; the thread is gone.
  void finish() noexcept {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    changed_.notify_one();
    thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;  // done, and nothing left
      std::vector<Item> work;
      work.swap(queue_);
      handling_ = true;
      lock.unlock();
      for (const Item& item : work) handle_(item);
      lock.lock();
      handling_ = false;
      if (queue_.empty()) idle_.notify_all();
    }
  }

  std::function<void(const Item&)> handle_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::condition_variable idle_;  // the queue ran empty (wait_idle)
  std::vector<Item> queue_;
  bool handling_ = false;  // a batch taken off the queue is being handled
  bool done_ = false;
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace tms
