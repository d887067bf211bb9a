// Rates behind a disk backup, each alone: the block checksum on 1 to N
// threads, and direct reads and writes of a directory's filesystem by
// transfer size and number in flight, the way the engine issues them
// (an unnamed file reserved with fallocate, threads taking 4 KiB-aligned
// blocks in order from page-aligned buffers). The defaults of
// TMS_DISK_BACKUP_CHUNK_MB, _WRITE_DEPTH and _READ_DEPTH come from such a
// table (docs/disk-backup.md).
//
//   tms_disk_backup_rates DIR [GiB=4] [max_threads=4]
//
// Needs no GPU. Writes one file of GiB in DIR per row (unnamed: nothing is
// left behind); prints GB/s.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "backup/checksum.h"
#include "block_transfers.h"

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Runs `work(thread)` on `threads` threads; returns the seconds it took.
template <typename Work>
double timed_on_threads(std::size_t threads, Work work) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> running;
  for (std::size_t t = 0; t < threads; ++t) running.emplace_back(work, t);
  for (std::thread& thread : running) thread.join();
  return seconds_since(start);
}

std::uint8_t* page_aligned(std::size_t bytes) {
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  auto* filled = static_cast<std::uint8_t*>(memory);
  for (std::size_t i = 0; i < bytes; ++i) filled[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return filled;
}

void checksum_rates(std::size_t max_threads) {
  const std::size_t block = 16 * kMiB;
  const std::size_t rounds = 16;
  std::vector<std::uint8_t*> buffers;
  for (std::size_t t = 0; t < max_threads; ++t) buffers.push_back(page_aligned(block));
  for (std::size_t threads = 1; threads <= max_threads; threads *= 2) {
    std::atomic<std::uint64_t> sink{0};
    const double seconds = timed_on_threads(threads, [&](std::size_t t) {
      for (std::size_t r = 0; r < rounds; ++r) {
        tms::Checksum checksum;
        checksum.update(buffers[t], block);
        sink += checksum.digest();
      }
    });
    std::printf("checksum, 16 MiB blocks, %2zu thread(s): %6.2f GB/s\n", threads,
                static_cast<double>(threads * rounds * block) / seconds / 1e9);
  }
  for (std::uint8_t* buffer : buffers) ::munmap(buffer, block);
}

/// One write and one read of `total` bytes in `block` transfers, `depth` in
/// flight; prints both rates.
void io_rates(const char* dir, std::size_t total, std::size_t block, std::size_t depth) {
  const int fd = ::openat(AT_FDCWD, dir, O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror("open O_TMPFILE | O_DIRECT");
    std::exit(1);
  }
  std::vector<std::uint8_t*> buffers;
  for (std::size_t t = 0; t < depth; ++t) buffers.push_back(page_aligned(block));
  const std::size_t blocks = total / block;
  double rates[2] = {0, 0};
  const auto reserve_start = std::chrono::steady_clock::now();
  if (::fallocate(fd, 0, 0, static_cast<off_t>(blocks * block)) != 0) std::perror("fallocate");
  const double reserve_seconds = seconds_since(reserve_start);
  for (int pass = 0; pass < 2; ++pass) {
    const double seconds = tms::bench::move_blocks(fd, pass == 0, blocks, block, buffers);
    if (seconds < 0) std::exit(1);
    rates[pass] =
        static_cast<double>(blocks * block) / (seconds + (pass == 0 ? reserve_seconds : 0)) / 1e9;
  }
  std::printf("direct, %3zu MiB transfers, %zu in flight: write %5.2f GB/s, read %5.2f GB/s\n",
              block / kMiB, depth, rates[0], rates[1]);
  for (std::uint8_t* buffer : buffers) ::munmap(buffer, block);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [GiB=4] [max_threads=4]\n", argv[0]);
    return 2;
  }
  const double gib = argc > 2 ? std::atof(argv[2]) : 4.0;
  const std::size_t max_threads = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 4;
  const auto total = static_cast<std::size_t>(gib * 1024) * kMiB;
  checksum_rates(max_threads);
  for (const std::size_t block_mib : {4, 16, 64}) {
    for (std::size_t depth = 1; depth <= max_threads; depth *= 2) {
      io_rates(argv[1], total, block_mib * kMiB, depth);
    }
  }
  return 0;
}
