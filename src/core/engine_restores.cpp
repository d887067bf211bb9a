// The engine's side of non-blocking resumes: the restores they leave
// running, the watcher that finishes them, and wait()/wait_on_stream().
//
// A non-blocking resume commits with its plain host copies still being
// copied back (Engine::resume). Those records stay busy and keep their
// backups; a RestoreInFlight holds them with events marking where the copies
// end on each lane. The watcher thread waits for the events, then lets go of
// the backups (host memory back with the OS) and clears busy. If the copies
// failed, the backups stay and the error is recorded on each record, to be
// raised once by wait() or by the next pause or resume of the tag; the wait
// after that copies them back again. Nothing is given back before a restore
// is known to be good.
#include <algorithm>
#include <exception>
#include <string>

#include "common/errors.h"
#include "common/log.h"
#include "core/engine.h"
#include "core/tag_text.h"

namespace tms {
namespace {

// The error raised for failed restores: how many, the first one's error,
// and what keeps the data and what the caller can do.
std::string restore_failure(std::size_t count, const std::optional<std::string>& tag,
                            const std::string& first) {
  return "the restore of " + std::to_string(count) + " allocations of " + describe_tag(tag) +
         " failed after a non-blocking resume returned (" + first +
         "); their backups are kept: wait() copies them back again, free() gives them up";
}

}  // namespace

void Engine::watch_restore(std::shared_ptr<RestoreInFlight> restore) noexcept {
  RestoreWatcher* watcher = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!restore_watcher_) {
      try {
        restore_watcher_ = std::make_unique<RestoreWatcher>(
            [this](const std::shared_ptr<RestoreInFlight>& each) { finish_restore(each); });
      } catch (const std::exception&) {
        // No memory for it: finished below, on this thread.
      }
    }
    watcher = restore_watcher_.get();
  }
  // Without a thread (none could be started) push() finishes it here: the
  // resume then returns after its copies, as a blocking one would.
  if (watcher != nullptr) {
    watcher->push(restore);
  } else {
    finish_restore(restore);
  }
}

void Engine::finish_restore(const std::shared_ptr<RestoreInFlight>& restore) noexcept {
  std::string error;
  bool failed = false;
  for (const LaneMark& mark : restore->marks) {
    try {
      driver_.synchronize_event(mark.device, mark.event.get());
    } catch (const std::exception& failure) {
      failed = true;
      try {
        if (error.empty()) error = failure.what();
      } catch (const std::exception&) {
        // No memory for the message: the failure still counts.
      }
    }
  }
  Released released;
  bool room = true;
  try {
    released.reserve(restore->allocations.size());
  } catch (const std::exception&) {
    room = false;  // the backups stay (like retained ones) until the next resume or free
  }
  {
    std::lock_guard lock(mutex_);
    for (Allocation* allocation : restore->allocations) {
      if (failed) {
        try {
          allocation->restore_error = error.empty() ? std::string("driver error") : error;
        } catch (const std::exception&) {
          allocation->restore_error = "driver error";  // short: no allocation
        }
        allocation->restore_error_raised = false;
      } else if (room) {
        let_go_of_backup(*allocation, released);
      }
    }
  }
  if (failed) {
    try {
      log(LogLevel::kError, "a restore behind a non-blocking resume failed: " + error +
                                " (the backups are kept; wait() raises it)");
    } catch (const std::exception&) {
      // wait() raises it all the same.
    }
  }
  // The host memory is back before the restore counts as done: wait()
  // returning promises both.
  for (DiskFile& file : released.files) disk_.close_later(std::move(file));
  if (!released.host.empty()) host_memory_.give_back(std::move(released.host));
  {
    std::lock_guard lock(mutex_);
    for (Allocation* allocation : restore->allocations) allocation->busy = false;
    std::erase(restores_in_flight_, restore);
  }
  idle_.notify_all();
}

bool Engine::restore_running(const std::optional<std::string>& tag) const {
  return std::ranges::any_of(restores_in_flight_, [&](const auto& restore) {
    return std::ranges::any_of(restore->allocations, [&](const Allocation* allocation) {
      return tag_matches(tag, allocation->tag);
    });
  });
}

bool Engine::restore_running(const Allocation& allocation) const {
  return std::ranges::any_of(restores_in_flight_, [&](const auto& restore) {
    return std::ranges::find(restore->allocations, &allocation) != restore->allocations.end();
  });
}

std::optional<std::string> Engine::raise_failed_restores(const std::optional<std::string>& tag) {
  std::size_t failed = 0;
  const Allocation* first = nullptr;
  for (const auto& [base, allocation] : registry_.all()) {
    if (allocation->restore_error.empty() || !tag_matches(tag, allocation->tag)) continue;
    ++failed;
    if (first == nullptr || (first->restore_error_raised && !allocation->restore_error_raised)) {
      first = allocation.get();
    }
  }
  if (failed == 0) return std::nullopt;
  std::string message = restore_failure(failed, tag, first->restore_error);  // first: it may throw
  // Raised now for all of them: the next wait() copies them back again.
  for (auto& [base, allocation] : registry_.all()) {
    if (!allocation->restore_error.empty() && tag_matches(tag, allocation->tag)) {
      allocation->restore_error_raised = true;
    }
  }
  return message;
}

void Engine::settle_restores(const std::optional<std::string>& tag, const char* operation) {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return !restore_running(tag); });
  if (std::optional<std::string> failure = raise_failed_restores(tag)) {
    throw InvalidState(std::string(operation) + " of " + describe_tag(tag) +
                       " refused: " + *failure);
  }
}

void Engine::wait(const std::optional<std::string>& tag) {
  {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return !restore_running(tag); });
    bool failed = false;
    bool raised = true;
    for (const auto& [base, allocation] : registry_.all()) {
      if (allocation->restore_error.empty() || !tag_matches(tag, allocation->tag)) continue;
      failed = true;
      raised = raised && allocation->restore_error_raised;
    }
    if (!failed) return;
    // Raised once; the next wait retries.
    if (!raised) throw Error(TMS_ERROR_DRIVER, *raise_failed_restores(tag));
  }
  retry_restores(tag);
}

void Engine::retry_restores(const std::optional<std::string>& tag) {
  std::lock_guard transition(transition_mutex_);  // the copy pipeline is used under it
  const std::vector<Allocation*> claimed = claim_failed_restores(tag);
  if (claimed.empty()) return;
  const ClaimGuard unclaim_on_exit(*this, claimed);
  std::vector<CopyItem> copies;
  copies.reserve(claimed.size());
  for (const Allocation* allocation : claimed) {
    // The record holds the backup (kept since the failure) while busy.
    const HostBuffer* buffer = allocation->backup ? allocation->backup->host_copy().get() : nullptr;
    if (buffer != nullptr) {
      copies.push_back({allocation->device, allocation->base, buffer->data(),
                        allocation->requested_size, buffer});
    }
  }
  try {
    QueuedCopies restores(copies_, /*to_host=*/false);
    restores.add(copies);
    restores.wait();
  } catch (const std::exception& error) {
    std::lock_guard lock(mutex_);
    for (Allocation* allocation : claimed) {
      allocation->restore_error = error.what();
      allocation->restore_error_raised = true;
    }
    throw Error(TMS_ERROR_DRIVER,
                "copying back again: " + restore_failure(claimed.size(), tag, error.what()));
  }
  Released released;
  released.reserve(claimed.size());
  {
    std::lock_guard lock(mutex_);
    for (Allocation* allocation : claimed) {
      allocation->restore_error.clear();
      let_go_of_backup(*allocation, released);
    }
  }
  log(LogLevel::kWarning, "copied " + std::to_string(claimed.size()) + " allocations of " +
                              describe_tag(tag) + " back again after their restore had failed");
  if (!released.host.empty()) host_memory_.give_back(std::move(released.host));
}

void Engine::wait_on_stream(const std::optional<std::string>& tag, StreamHandle stream) {
  std::vector<std::shared_ptr<RestoreInFlight>> running;
  {
    std::lock_guard lock(mutex_);
    if (std::optional<std::string> failure = raise_failed_restores(tag)) {
      throw Error(TMS_ERROR_DRIVER, *failure);
    }
    for (const auto& restore : restores_in_flight_) {
      if (std::ranges::any_of(restore->allocations, [&](const Allocation* allocation) {
            return tag_matches(tag, allocation->tag);
          })) {
        running.push_back(restore);
      }
    }
  }
  // The shared pointers keep the events alive while the watcher finishes
  // the restores meanwhile; waiting on a completed event is a no-op.
  for (const auto& restore : running) {
    for (const LaneMark& mark : restore->marks) {
      driver_.stream_wait_event(mark.device, stream, mark.event.get());
    }
  }
}

}  // namespace tms
