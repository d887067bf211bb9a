// The disk benchmarks' transfer loop: `threads` threads take the blocks of a
// file in order, the way the engine's I/O threads do, each moving whole
// blocks with pwrite or pread from its own page-aligned buffer.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

namespace tms::bench {

/// Moves `blocks` blocks of `block` bytes through `fd` (`write`: pwrite,
/// else pread) on `buffers.size()` threads, thread t using buffers[t].
/// @returns the seconds it took, or -1 after a failed or short transfer
/// (reported with perror).
inline double move_blocks(int fd, bool write, std::size_t blocks, std::size_t block,
                          const std::vector<std::uint8_t*>& buffers) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> running;
  for (std::size_t t = 0; t < buffers.size(); ++t) {
    running.emplace_back([&, t] {
      for (std::size_t k; !failed && (k = next++) < blocks;) {
        const auto offset = static_cast<off_t>(k * block);
        const ssize_t moved = write ? ::pwrite(fd, buffers[t], block, offset)
                                    : ::pread(fd, buffers[t], block, offset);
        if (moved != static_cast<ssize_t>(block)) {
          std::perror(write ? "pwrite" : "pread");
          failed = true;
        }
      }
    });
  }
  for (std::thread& thread : running) thread.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return failed ? -1.0 : seconds;
}

}  // namespace tms::bench
