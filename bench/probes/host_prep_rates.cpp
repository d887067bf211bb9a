// Host-side rates behind a cold pause with CPU backup, by thread count.
//
// A cold pause needs fresh host memory that the copy engine can write: the
// engine faults it in (the kernel zeroes each huge page) and page-locks it
// (cuMemHostRegister) in 64 MiB chunks on worker threads while the copies
// run. This program measures each step alone, on fresh THP memory, for 1 to
// 16 threads, next to what a pinned staging ring would cost the CPU instead
// (copying into fresh, unregistered memory):
//
//   fault-in            one store per 4 KiB page of fresh memory
//   register            cuMemHostRegister of memory already faulted in
//   fault+register      both per chunk, on the same thread
//   copy into fresh     memcpy from a per-thread 64 MiB source into fresh memory
//   copy into faulted   memcpy into memory already faulted in
//   unregister          cuMemHostUnregister
//
//   tms_host_prep_rates [GiB=8] [max_threads=16]
//
// Needs the CUDA driver (libcuda) for the register rows; prints GB/s.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "driver/cuda_driver.h"
#include "fresh_memory.h"

namespace {

using tms::bench::FreshMemory;
using tms::bench::kChunk;
using tms::bench::touch_chunk;

// Runs `work(chunk_index, thread_index)` over every chunk, chunks handed out
// in order to `threads` threads; returns seconds.
double run_chunks(std::size_t chunks, unsigned threads,
                  const std::function<void(std::size_t, unsigned)>& work) {
  std::atomic<std::size_t> next{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t i = next++; i < chunks; i = next++) work(i, t);
    });
  }
  for (std::thread& thread : pool) thread.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t gib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 8;
  const unsigned max_threads = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 16;
  const std::size_t size = gib << 30;
  const double bytes = static_cast<double>(size);
  try {
    tms::CudaDriver driver;
    (void)driver.device_count();  // loads the driver; throws without one
    std::printf("%-8s %12s %12s %16s %16s %18s %12s   (GB/s, %zu GiB, 64 MiB chunks)\n", "threads",
                "fault-in", "register", "fault+register", "copy-into-fresh", "copy-into-faulted",
                "unregister", gib);
    for (unsigned threads = 1; threads <= max_threads; threads *= 2) {
      std::vector<std::vector<std::uint8_t>> sources(threads,
                                                     std::vector<std::uint8_t>(kChunk, 0x5a));
      double fault_s = 0, register_s = 0, both_s = 0, fresh_s = 0, faulted_s = 0, unregister_s = 0;
      {
        FreshMemory memory(size);
        fault_s = run_chunks(memory.chunks(), threads,
                             [&](std::size_t i, unsigned) { touch_chunk(memory.chunk(i)); });
        register_s = run_chunks(memory.chunks(), threads, [&](std::size_t i, unsigned) {
          driver.host_register(memory.chunk(i), kChunk);
        });
        unregister_s = run_chunks(memory.chunks(), threads, [&](std::size_t i, unsigned) {
          driver.host_unregister(memory.chunk(i));
        });
        faulted_s = run_chunks(memory.chunks(), threads, [&](std::size_t i, unsigned t) {
          std::memcpy(memory.chunk(i), sources[t].data(), kChunk);
        });
      }
      {
        FreshMemory memory(size);
        both_s = run_chunks(memory.chunks(), threads, [&](std::size_t i, unsigned) {
          touch_chunk(memory.chunk(i));
          driver.host_register(memory.chunk(i), kChunk);
        });
        run_chunks(memory.chunks(), threads,
                   [&](std::size_t i, unsigned) { driver.host_unregister(memory.chunk(i)); });
      }
      {
        FreshMemory memory(size);
        fresh_s = run_chunks(memory.chunks(), threads, [&](std::size_t i, unsigned t) {
          std::memcpy(memory.chunk(i), sources[t].data(), kChunk);
        });
      }
      std::printf("%-8u %12.1f %12.1f %16.1f %16.1f %18.1f %12.1f\n", threads,
                  bytes / fault_s / 1e9, bytes / register_s / 1e9, bytes / both_s / 1e9,
                  bytes / fresh_s / 1e9, bytes / faulted_s / 1e9, bytes / unregister_s / 1e9);
      std::fflush(stdout);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tms_host_prep_rates: %s\n", error.what());
    return 1;
  }
  return 0;
}
