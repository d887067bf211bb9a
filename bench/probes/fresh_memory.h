// Fresh host memory for the probes of a cold pause (host_prep_rates.cpp,
// cold_pause_probe.cpp): anonymous THP memory nobody has touched, in the
// engine's default 64 MiB register chunks, and the per-page store that
// faults a chunk in the way the engine's preparing threads do.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace tms::bench {

constexpr std::size_t kChunk = std::size_t{64} << 20;
constexpr std::size_t kPage = 4096;

/// Fresh anonymous THP memory, unmapped when the object goes away.
class FreshMemory {
 public:
  explicit FreshMemory(std::size_t size) : size_(size) {
    void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr == MAP_FAILED) throw std::runtime_error("mmap failed");
    (void)madvise(ptr, size, MADV_HUGEPAGE);
    base_ = static_cast<std::uint8_t*>(ptr);
  }
  ~FreshMemory() { munmap(base_, size_); }
  FreshMemory(const FreshMemory&) = delete;
  FreshMemory& operator=(const FreshMemory&) = delete;

  [[nodiscard]] std::uint8_t* chunk(std::size_t index) const { return base_ + index * kChunk; }
  [[nodiscard]] std::size_t chunks() const { return size_ / kChunk; }

 private:
  std::uint8_t* base_ = nullptr;
  std::size_t size_;
};

/// One store per 4 KiB page of the chunk at `start`: the kernel faults it
/// in (zeroes it) on the calling thread.
inline void touch_chunk(std::uint8_t* start) {
  for (std::size_t offset = 0; offset < kChunk; offset += kPage) {
    static_cast<volatile std::uint8_t*>(start)[offset] = 0;
  }
}

}  // namespace tms::bench
