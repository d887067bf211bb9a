// Starting helper threads for work that the caller's thread can also do.
//
// Starting a thread can fail: the system refuses one (std::system_error,
// EAGAIN at a thread or memory limit) or there is no memory for its state
// (std::bad_alloc). Where the library only wants threads for speed (host
// memory preparation and release, disk transfers), that is not an error of
// the operation: it runs with the threads it got, or on the caller's thread
// when it got none, with the same results. These helpers are the one place
// that decides so; they never throw and never leave a joinable std::thread
// to be destroyed (which would call std::terminate).
#pragma once

#include <cstddef>
#include <exception>
#include <new>
#include <thread>
#include <utility>
#include <vector>

namespace tms {

/// A thread running `body`, or an empty (not joinable) one when none can be
/// started: the caller then does the work itself.
template <typename Body>
std::thread start_thread_or_none(Body&& body) noexcept {
  try {
    return std::thread(std::forward<Body>(body));
  } catch (const std::exception&) {
    return {};
  }
}

/// Adds up to `count` threads running `body` to the empty `threads`;
/// returns how many started (fewer, or none, when the system refuses more).
template <typename Body>
std::size_t start_threads(std::vector<std::thread>& threads, std::size_t count,
                          const Body& body) noexcept {
  try {
    threads.reserve(count);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  while (threads.size() < count) {
    std::thread thread = start_thread_or_none(body);
    if (!thread.joinable()) break;
    threads.push_back(std::move(thread));  // reserved: cannot throw
  }
  return threads.size();
}

}  // namespace tms
