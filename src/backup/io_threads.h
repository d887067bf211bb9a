// A few threads that run the block transfers of one disk backup, so that
// several reads or writes are in flight while the caller's thread queues
// the device copies between them (backup/disk_backup.cpp).
//
// Each task is bound to a slot, a piece of staging memory the caller owns:
// the caller waits for a slot before it reuses that memory. The first task
// to fail stops the batch: tasks still queued are dropped, and run(),
// wait() and wait_all() throw its exception from then on. The destructor
// waits for the running tasks: no transfer outlives the call that started
// it, so the staging memory and the file descriptor stay valid for them.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace tms {

class IoThreads {
 public:
  /// `slots` slots served by up to `threads` threads (fewer when the system
  /// refuses to start more; with none, run() runs each task on the
  /// caller's thread).
  IoThreads(std::size_t threads, std::size_t slots);
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;
  /// Drops queued tasks, waits for running ones, joins the threads.
  ~IoThreads();

  /// Queues `task` for `slot`, which must be idle (never used, or waited
  /// for). @throws the exception of a task that failed before (this one is
  /// then not run).
  void run(std::size_t slot, std::function<void()> task);
  /// Waits until `slot`'s task has finished or was dropped.
  /// @throws the first failure of any task.
  void wait(std::size_t slot);
  /// Waits for every task. @throws the first failure of any task.
  void wait_all();
  /// Drops queued tasks and waits for running ones, ignoring failures
  /// (for unwinding).
  void wait_quietly() noexcept;

 private:
  void work();
  /// Records the first failure and drops the queue. Caller holds mutex_.
  void fail(std::exception_ptr error);
  void drop_queued();

  std::mutex mutex_;
  std::condition_variable work_ready_;  // a task was queued, or stop_
  std::condition_variable task_done_;   // a slot became idle
  std::deque<std::pair<std::size_t, std::function<void()>>> queue_;
  std::vector<bool> busy_;  // per slot: queued or running
  std::size_t running_ = 0;
  std::exception_ptr failure_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tms
