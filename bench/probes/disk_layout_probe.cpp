// Why does a disk backup read back slower than the disk floor's best read?
//
// The floor writes a fresh named file with one sequential stream and reads it
// back; a disk backup reserves an unnamed file with fallocate and writes it
// with several transfers in flight. This probe writes one file each way, in
// the same process and in alternating order, and reads each back with 1 and
// with `depth` transfers in flight, then once more with 1 (a read served by a
// cache below the guest shows up as a faster repeat):
//
//   write: {fallocate + `depth` writers, extending writes by 1 writer,
//           fallocate + 1 writer, extending writes by `depth` writers}
//   read:  1 in flight, `depth` in flight, 1 in flight again
//
//   tms_disk_layout_probe DIR [GiB=4] [block_MiB=16] [depth=4] [rounds=2]
//
// Every transfer is O_DIRECT from page-aligned buffers; files are unnamed
// (O_TMPFILE), so nothing is left behind. Needs no GPU; prints GB/s.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "block_transfers.h"

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

struct Layout {
  const char* name;
  bool reserve;  // fallocate the whole file first
  bool deep;     // `depth` writers instead of one
};

constexpr Layout kLayouts[] = {
    {"fallocate, depth writers (the engine)", true, true},
    {"extending, 1 writer (the floor)", false, false},
    {"fallocate, 1 writer", true, false},
    {"extending, depth writers", false, true},
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// GB/s of moving `blocks` blocks through `fd` on the first `threads` of
/// `buffers` (0 after a failed transfer).
double rate(int fd, bool write, std::size_t blocks, std::size_t block,
            const std::vector<std::uint8_t*>& buffers, std::size_t threads) {
  const std::vector<std::uint8_t*> used(buffers.begin(),
                                        buffers.begin() + static_cast<std::ptrdiff_t>(threads));
  const double seconds = tms::bench::move_blocks(fd, write, blocks, block, used);
  return seconds < 0 ? 0.0 : static_cast<double>(blocks * block) / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [GiB=4] [block_MiB=16] [depth=4] [rounds=2]\n", argv[0]);
    return 2;
  }
  const double gib = argc > 2 ? std::atof(argv[2]) : 4.0;
  const std::size_t block = (argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 16) * kMiB;
  const std::size_t depth = argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 4;
  const int rounds = argc > 5 ? std::atoi(argv[5]) : 2;
  if (block == 0 || depth == 0) {
    std::fprintf(stderr, "block and depth must be positive\n");
    return 2;
  }
  const std::size_t blocks = static_cast<std::size_t>(gib * 1024) * kMiB / block;
  std::vector<std::uint8_t*> buffers;
  for (std::size_t t = 0; t < depth; ++t) {
    void* memory =
        ::mmap(nullptr, block, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
      std::perror("mmap");
      return 1;
    }
    auto* bytes = static_cast<std::uint8_t*>(memory);
    for (std::size_t i = 0; i < block; ++i) bytes[i] = static_cast<std::uint8_t>(i * 131 + t);
    buffers.push_back(bytes);
  }
  std::printf("%zu MiB transfers, %zu in flight, %.2f GiB per file\n", block / kMiB, depth,
              static_cast<double>(blocks * block) / (1024.0 * kMiB));
  for (int round = 0; round < rounds; ++round) {
    // Alternate the order so that no layout is always measured first.
    for (std::size_t i = 0; i < std::size(kLayouts); ++i) {
      const Layout& layout = kLayouts[round % 2 == 0 ? i : std::size(kLayouts) - 1 - i];
      const int fd = ::openat(AT_FDCWD, argv[1], O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
      if (fd < 0) {
        std::perror("open O_TMPFILE | O_DIRECT");
        return 1;
      }
      const auto start = std::chrono::steady_clock::now();
      if (layout.reserve && ::fallocate(fd, 0, 0, static_cast<off_t>(blocks * block)) != 0) {
        std::perror("fallocate");
      }
      const double reserve_s = seconds_since(start);
      const double write = rate(fd, true, blocks, block, buffers, layout.deep ? depth : 1);
      const double read1 = rate(fd, false, blocks, block, buffers, 1);
      const double read_deep = rate(fd, false, blocks, block, buffers, depth);
      const double read1_again = rate(fd, false, blocks, block, buffers, 1);
      std::printf(
          "round %d  %-40s  write %5.2f GB/s (+fallocate %.3f s)  read 1: %5.2f  read %zu: %5.2f  "
          "read 1 again: %5.2f\n",
          round, layout.name, write, reserve_s, read1, depth, read_deep, read1_again);
      std::fflush(stdout);
      ::close(fd);
    }
  }
  for (std::uint8_t* buffer : buffers) ::munmap(buffer, block);
  return 0;
}
