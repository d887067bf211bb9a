// Whether a pause's unmap and release can run behind its copies, on one GPU.
//
// A pause with CPU backup copies every allocation to the host, waits for all
// copies, then unmaps every allocation and releases its physical memory
// (src/core/engine.cpp). With many allocations the unmap and release calls
// add up (tens of microseconds each), after the copies. This program times,
// in one process, for the same allocations and a host target registered
// beforehand (so that only the device side is measured):
//
//   copies only               the D2H copies of every allocation, two streams
//   unmap+release only        the calls alone, no copies
//   copies, then unmap+rel.   what a pause does today
//   overlapped unmap+release  copies queued a batch ahead; each batch is
//                             unmapped and released once its copies are done,
//                             while the next batch copies
//   overlapped unmap          the same, releasing everything at the end
//   release during copies     every handle released (cuMemRelease of memory
//                             still mapped keeps it alive) while the copies
//                             run, then the unmaps, which now free it
//   ... on 4 threads          the calls alone, and after the copies, split
//                             over 4 threads: whether the driver runs them
//                             side by side
//
// Each arrangement is run on freshly created, mapped and written allocations,
// three times in turn; the median is reported, in ms and as a ratio to
// "copies only" (1.00 means the calls cost nothing beside the copies).
//
//   tms_unmap_overlap_probe [GiB=8] [count=4096] [batch MiB=256] [cuda|sim]
//
// (sim: the simulated driver, to check the program itself without a GPU.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/sizes.h"
#include "driver/cuda_driver.h"
#include "driver/sim_driver.h"
#include "vmm_allocations.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kRounds = 3;
constexpr int kDevice = 0;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

enum class Order {
  kCopiesOnly,
  kCallsOnly,
  kSerial,
  kOverlapBoth,
  kOverlapUnmap,
  kReleaseFirst,
  kCallsThreaded,
  kSerialThreaded,
};

constexpr std::size_t kCallThreads = 4;

struct Arrangement {
  const char* name;
  Order order;
};

struct Timing {
  double total = 0;
  double calls = 0;  // time spent inside unmap/release calls
};

using Allocations = tms::bench::VmmAllocations;

struct Setup {
  tms::Driver& driver;
  std::size_t count;
  std::size_t each;
  std::size_t per_batch;  // allocations per batch
  std::uint8_t* host;     // count * each bytes, page-locked
  tms::StreamHandle streams[2];
};

Timing run(const Setup& setup, Order order) {
  tms::Driver& driver = setup.driver;
  Allocations allocations(driver, kDevice, setup.count, setup.each, setup.host, setup.streams[0]);
  const std::size_t batches = (setup.count + setup.per_batch - 1) / setup.per_batch;
  auto first = [&](std::size_t batch) { return batch * setup.per_batch; };
  auto last = [&](std::size_t batch) { return std::min(setup.count, first(batch + 1)); };
  auto queue = [&](std::size_t batch) {
    for (std::size_t i = first(batch); i < last(batch); ++i) {
      driver.copy_to_host_async(kDevice, setup.host + i * setup.each, allocations.va(i), setup.each,
                                setup.streams[batch % 2]);
    }
  };
  Timing timing;
  auto timed = [&](auto&& calls) {
    const Clock::time_point start = Clock::now();
    calls();
    timing.calls += seconds_since(start);
  };
  const Clock::time_point start = Clock::now();
  switch (order) {
    case Order::kCopiesOnly:
    case Order::kSerial:
      for (std::size_t batch = 0; batch < batches; ++batch) queue(batch);
      driver.synchronize_stream(kDevice, setup.streams[0]);
      driver.synchronize_stream(kDevice, setup.streams[1]);
      if (order == Order::kSerial) {
        timed([&] {
          for (std::size_t i = 0; i < setup.count; ++i) allocations.unmap(i);
          for (std::size_t i = 0; i < setup.count; ++i) allocations.release(i);
        });
      }
      break;
    case Order::kCallsOnly:
      timed([&] {
        for (std::size_t i = 0; i < setup.count; ++i) allocations.unmap(i);
        for (std::size_t i = 0; i < setup.count; ++i) allocations.release(i);
      });
      break;
    case Order::kCallsThreaded:
    case Order::kSerialThreaded:
      if (order == Order::kSerialThreaded) {
        for (std::size_t batch = 0; batch < batches; ++batch) queue(batch);
        driver.synchronize_stream(kDevice, setup.streams[0]);
        driver.synchronize_stream(kDevice, setup.streams[1]);
      }
      timed([&] {
        std::vector<std::exception_ptr> errors(kCallThreads);
        std::vector<std::thread> threads;
        for (std::size_t t = 0; t < kCallThreads; ++t) {
          threads.emplace_back([&, t] {
            try {
              for (std::size_t i = t; i < setup.count; i += kCallThreads) {
                allocations.unmap(i);
                allocations.release(i);
              }
            } catch (...) {
              errors[t] = std::current_exception();
            }
          });
        }
        for (std::thread& thread : threads) thread.join();
        for (const std::exception_ptr& error : errors) {
          if (error) std::rethrow_exception(error);
        }
      });
      break;
    case Order::kReleaseFirst:
      for (std::size_t batch = 0; batch < batches; ++batch) queue(batch);
      timed([&] {
        for (std::size_t i = 0; i < setup.count; ++i) allocations.release(i);
      });
      driver.synchronize_stream(kDevice, setup.streams[0]);
      driver.synchronize_stream(kDevice, setup.streams[1]);
      timed([&] {
        for (std::size_t i = 0; i < setup.count; ++i) allocations.unmap(i);
      });
      break;
    case Order::kOverlapBoth:
    case Order::kOverlapUnmap: {
      // Batch b + 1 is queued before batch b is waited for, so the copy
      // engine has work while batch b's calls run.
      queue(0);
      for (std::size_t batch = 0; batch < batches; ++batch) {
        if (batch + 1 < batches) queue(batch + 1);
        driver.synchronize_stream(kDevice, setup.streams[batch % 2]);
        timed([&] {
          for (std::size_t i = first(batch); i < last(batch); ++i) {
            allocations.unmap(i);
            if (order == Order::kOverlapBoth) allocations.release(i);
          }
        });
      }
      if (order == Order::kOverlapUnmap) {
        timed([&] {
          for (std::size_t i = 0; i < setup.count; ++i) allocations.release(i);
        });
      }
      break;
    }
  }
  timing.total = seconds_since(start);
  return timing;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t gib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 8;
  const std::size_t count = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 4096;
  const std::size_t batch_mib = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 256;
  const bool sim = argc > 4 && std::string(argv[4]) == "sim";
  if (gib == 0 || count == 0 || batch_mib == 0) {
    std::fprintf(stderr,
                 "usage: tms_unmap_overlap_probe [GiB>0] [count>0] [batch MiB>0] "
                 "[cuda|sim]\n");
    return 2;
  }
  try {
    std::unique_ptr<tms::Driver> loaded;
    if (sim) {
      tms::SimDriverOptions options;
      options.capacity_bytes = std::max(options.capacity_bytes, gib << 30);
      loaded = std::make_unique<tms::SimDriver>(options);
    } else {
      loaded = std::make_unique<tms::CudaDriver>();
    }
    tms::Driver& driver = *loaded;
    (void)driver.device_count();  // loads the driver; throws without one
    const std::size_t granularity = driver.granularity(kDevice);
    const std::size_t each = tms::round_up((gib << 30) / count, granularity);
    const std::size_t total = each * count;
    auto* host = static_cast<std::uint8_t*>(driver.host_alloc(total));
    driver.host_register(host, total);
    Setup setup{driver, count, each, std::max<std::size_t>(1, (batch_mib << 20) / each), host, {}};
    setup.streams[0] = driver.create_stream(kDevice);
    setup.streams[1] = driver.create_stream(kDevice);

    const std::vector<Arrangement> arrangements = {
        {"copies only", Order::kCopiesOnly},
        {"unmap+release only", Order::kCallsOnly},
        {"copies, then unmap+release", Order::kSerial},
        {"overlapped unmap+release", Order::kOverlapBoth},
        {"overlapped unmap, release at end", Order::kOverlapUnmap},
        {"release during copies, then unmap", Order::kReleaseFirst},
        {"unmap+release only, 4 threads", Order::kCallsThreaded},
        {"copies, then unmap+release x4", Order::kSerialThreaded},
    };
    (void)run(setup, Order::kSerial);  // once untimed: first-use costs
    std::vector<std::vector<double>> totals(arrangements.size());
    std::vector<std::vector<double>> calls(arrangements.size());
    for (int round = 0; round < kRounds; ++round) {
      for (std::size_t a = 0; a < arrangements.size(); ++a) {
        const Timing timing = run(setup, arrangements[a].order);
        totals[a].push_back(timing.total);
        calls[a].push_back(timing.calls);
      }
    }
    const double copies = median(totals[0]);
    std::printf(
        "%zu allocations of %zu MiB (%.2f GiB), batches of %zu, median of %d; "
        "copies only %.1f GB/s\n",
        count, each >> 20, static_cast<double>(total) / (1 << 30), setup.per_batch, kRounds,
        static_cast<double>(total) / copies / 1e9);
    std::printf("%-34s %10s %14s %12s\n", "arrangement", "total ms", "in calls ms", "vs copies");
    for (std::size_t a = 0; a < arrangements.size(); ++a) {
      std::printf("%-34s %10.1f %14.1f %12.2f\n", arrangements[a].name, median(totals[a]) * 1e3,
                  median(calls[a]) * 1e3, median(totals[a]) / copies);
    }
    driver.destroy_stream(kDevice, setup.streams[0]);
    driver.destroy_stream(kDevice, setup.streams[1]);
    driver.host_unregister(host);
    driver.host_free(host, total);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tms_unmap_overlap_probe: %s\n", error.what());
    return 1;
  }
}
