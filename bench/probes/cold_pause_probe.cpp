// Ways to prepare fresh host memory for a cold pause, alone and feeding the
// device-to-host copies, on one GPU.
//
// A cold pause with CPU backup copies into host memory nobody has touched:
// each 64 MiB chunk is faulted in (the kernel zeroes it) and page-locked
// (cuMemHostRegister) before the copy engine may write it. The engine's
// workers fault chunks in, one of them at a time registers what is faulted
// in and queues those chunks' copies (src/backup/host_memory.cpp). This
// program times fixed arrangements of the same work on the same machine, in
// one run, so that the engine's choice is measured rather than assumed:
//
//   touch+register     each worker stores once per 4 KiB page, then registers
//                      (what the engine did before it took turns registering)
//   populate+register  MADV_POPULATE_WRITE instead of the stores
//   register only      cuMemHostRegister faults the pages in itself
//   split F/R          F workers fault chunks in, R others register them in
//                      order (registration is serialized in the driver)
//   ... +own copies    the thread that registered a chunk queues its copy,
//                      instead of the caller thread waiting for each chunk
//
// Each arrangement runs alone ("prepare") and with the copies behind it
// ("pause": prepared chunk i is copied at once from an 8 GiB device buffer,
// on two streams), three times in turn, median reported; rates are GB/s and
// the pause also as a ratio to copying into memory registered beforehand,
// for the median round and the slowest one.
// A second table runs the two halves of a pause side by side without any
// dependency between them: workers fault in and/or register fresh memory
// while the copy engine writes memory registered beforehand, and each side's
// rate is measured alone and while the other runs. A third table runs the
// engine's arrangement with a pause's unmap and release calls for many
// allocations: none, after the copies (what the engine does), and beside
// the preparation (what giving each allocation back as soon as its copy is
// done would do), to see whether those calls hide behind a cold pause.
//
//   tms_cold_pause_probe [GiB=8] [threads=8] [driver=cuda|sim]
//
// (sim: the simulated driver, to check the program itself without a GPU.)
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/sizes.h"
#include "driver/cuda_driver.h"
#include "driver/sim_driver.h"
#include "fresh_memory.h"
#include "vmm_allocations.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace {

using Clock = std::chrono::steady_clock;

using tms::bench::kChunk;
using tms::bench::touch_chunk;

constexpr int kRounds = 3;
constexpr int kStreams = 2;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Fresh memory whose registered chunks are unregistered when it goes away.
class FreshMemory {
 public:
  FreshMemory(tms::Driver& driver, std::size_t size)
      : driver_(driver), memory_(size), registered_(memory_.chunks(), 0) {}
  ~FreshMemory() {
    for (std::size_t i = 0; i < chunks(); ++i) {
      if (registered_[i] != 0) {
        try {
          driver_.host_unregister(chunk(i));
        } catch (const std::exception&) {  // a probe: unmapping anyway is fine
        }
      }
    }
  }
  FreshMemory(const FreshMemory&) = delete;
  FreshMemory& operator=(const FreshMemory&) = delete;

  [[nodiscard]] std::uint8_t* chunk(std::size_t index) const { return memory_.chunk(index); }
  [[nodiscard]] std::size_t chunks() const { return memory_.chunks(); }
  void register_chunk(std::size_t index) {
    driver_.host_register(chunk(index), kChunk);
    registered_[index] = 1;  // each index is written by one thread
  }
  /// Faults in and registers every chunk on this thread (a copy target
  /// ready beforehand).
  void prepare_all() {
    for (std::size_t i = 0; i < chunks(); ++i) {
      touch_chunk(chunk(i));
      register_chunk(i);
    }
  }

 private:
  tms::Driver& driver_;
  tms::bench::FreshMemory memory_;
  std::vector<std::uint8_t> registered_;
};

enum class Fault { kTouch, kPopulate, kNone };

struct Arrangement {
  std::string name;
  Fault fault;
  unsigned workers;         // threads that fault in (and register, when registrars == 0)
  unsigned registrars;      // threads that only register, in chunk order
  bool own_copies = false;  // the registering thread queues the chunk's copy itself
};

void fault_in(Fault how, std::uint8_t* start) {
  if (how == Fault::kTouch) {
    touch_chunk(start);
  } else if (how == Fault::kPopulate) {
    if (madvise(start, kChunk, MADV_POPULATE_WRITE) != 0) {
      throw std::runtime_error("MADV_POPULATE_WRITE refused (Linux 5.14 or later needed)");
    }
  }
}

// Which chunks are faulted in and registered; waiters wake on each change.
class Progress {
 public:
  explicit Progress(std::size_t chunks) : faulted_(chunks, 0), registered_(chunks, 0) {}

  void mark(std::vector<std::uint8_t>& flags, std::size_t index) {
    std::lock_guard lock(mutex_);
    flags[index] = 1;
    changed_.notify_all();
  }
  void fail(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (error_ == nullptr) error_ = std::move(error);
    changed_.notify_all();
  }
  /// False when a worker failed instead.
  bool wait(const std::vector<std::uint8_t>& flags, std::size_t index) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return flags[index] != 0 || error_ != nullptr; });
    return flags[index] != 0;
  }
  void rethrow() {
    std::lock_guard lock(mutex_);
    if (error_ != nullptr) std::rethrow_exception(error_);
  }

  std::vector<std::uint8_t> faulted_;
  std::vector<std::uint8_t> registered_;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::exception_ptr error_;
};

// Device memory to copy from, and the streams the copies run on.
class DeviceSource {
 public:
  DeviceSource(tms::Driver& driver, int device, std::size_t size)
      : driver_(driver), device_(device) {
    const std::size_t granularity = driver.granularity(device);
    size_ = tms::round_up(size, granularity);
    va_ = driver.reserve(size_, granularity);
    handle_ = driver.create_physical(device, size_);
    driver.map(va_, size_, handle_);
    driver.set_access(va_, size_, device);
    for (int s = 0; s < kStreams; ++s) streams_.push_back(driver.create_stream(device));
  }
  ~DeviceSource() {
    try {
      for (tms::StreamHandle stream : streams_) driver_.destroy_stream(device_, stream);
      driver_.unmap(va_, size_);
      driver_.release_physical(handle_);
      driver_.free_reservation(va_, size_);
    } catch (const std::exception&) {  // the process ends next
    }
  }
  DeviceSource(const DeviceSource&) = delete;
  DeviceSource& operator=(const DeviceSource&) = delete;

  void copy_chunk(std::size_t index, void* dst) {
    driver_.copy_to_host_async(device_, dst, va_ + index * kChunk, kChunk,
                               streams_[index % streams_.size()]);
  }
  void wait() {
    for (tms::StreamHandle stream : streams_) driver_.synchronize_stream(device_, stream);
  }

 private:
  tms::Driver& driver_;
  int device_;
  std::size_t size_ = 0;
  tms::DevicePtr va_{};
  tms::PhysicalHandle handle_{};
  std::vector<tms::StreamHandle> streams_;
};

struct Timing {
  double prepared = 0;  // seconds until every chunk was registered
  double total = 0;     // ... and, with copies, until they completed
};

// A pause's unmap and release calls, one pair per allocation: none, beside
// the preparation (allocation i once the chunk holding the end of its share
// is registered, as giving each back when its copy is done would), or after
// the copies (what the engine does).
enum class Calls { kNone, kBeside, kAfter };

// Prepares fresh memory the way `a` says; with `source`, copies each chunk
// into it as soon as it is registered; with `allocations`, makes their
// calls as `calls` says, within the time measured.
Timing run(tms::Driver& driver, std::size_t size, const Arrangement& a, DeviceSource* source,
           tms::bench::VmmAllocations* allocations = nullptr, Calls calls = Calls::kNone) {
  FreshMemory memory(driver, size);
  const std::size_t chunks = memory.chunks();
  Progress progress(chunks);
  std::atomic<std::size_t> next_fault{0};
  std::atomic<std::size_t> next_register{0};
  std::atomic<bool> stop{false};

  auto guarded = [&](auto body) {
    return [&, body] {
      try {
        body();
      } catch (...) {
        stop.store(true);
        progress.fail(std::current_exception());
      }
    };
  };
  auto faulter = [&] {
    for (std::size_t i = next_fault++; i < chunks && !stop.load(); i = next_fault++) {
      fault_in(a.fault, memory.chunk(i));
      if (a.registrars == 0) {
        memory.register_chunk(i);
        if (a.own_copies && source != nullptr) source->copy_chunk(i, memory.chunk(i));
        progress.mark(progress.registered_, i);
      } else {
        progress.mark(progress.faulted_, i);
      }
    }
  };
  auto registrar = [&] {
    for (std::size_t i = next_register++; i < chunks && !stop.load(); i = next_register++) {
      if (!progress.wait(progress.faulted_, i)) return;
      memory.register_chunk(i);
      if (a.own_copies && source != nullptr) source->copy_chunk(i, memory.chunk(i));
      progress.mark(progress.registered_, i);
    }
  };

  auto give_back_beside = [&] {
    const std::size_t count = allocations->count();
    for (std::size_t i = 0; i < count && !stop.load(); ++i) {
      if (!progress.wait(progress.registered_, ((i + 1) * chunks - 1) / count)) return;
      allocations->unmap(i);
      allocations->release(i);
    }
  };

  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < a.workers; ++t) threads.emplace_back(guarded(faulter));
  for (unsigned t = 0; t < a.registrars; ++t) threads.emplace_back(guarded(registrar));
  std::thread giver;
  if (allocations != nullptr && calls == Calls::kBeside)
    giver = std::thread(guarded(give_back_beside));
  Timing timing;
  for (std::size_t i = 0; i < chunks; ++i) {
    if (!progress.wait(progress.registered_, i)) break;
    if (source != nullptr && !a.own_copies) source->copy_chunk(i, memory.chunk(i));
  }
  timing.prepared = seconds_since(start);
  if (source != nullptr) source->wait();
  if (giver.joinable()) giver.join();
  if (allocations != nullptr && calls == Calls::kAfter) allocations->give_back_all();
  timing.total = seconds_since(start);
  for (std::thread& thread : threads) thread.join();
  progress.rethrow();
  return timing;
}

// Copying into memory registered beforehand: the pause floor.
double warm_copy(tms::Driver& driver, std::size_t size, DeviceSource& source) {
  FreshMemory memory(driver, size);
  memory.prepare_all();
  const Clock::time_point start = Clock::now();
  for (std::size_t i = 0; i < memory.chunks(); ++i) source.copy_chunk(i, memory.chunk(i));
  source.wait();
  return seconds_since(start);
}

struct Shared {
  double side = 0;  // GB/s of the host side work while copies ran
  double copy = 0;  // GB/s of copies while the side work ran
};

enum class Side { kFault, kRegister, kBoth };

// Runs `side` over fresh memory on `threads` workers (kRegister: memory
// faulted in beforehand); with `source`, the copy engine keeps writing memory
// registered beforehand meanwhile, 256 MiB per wait, until the workers finish.
Shared side_work(tms::Driver& driver, std::size_t size, DeviceSource* source, Side side,
                 unsigned threads) {
  std::unique_ptr<FreshMemory> target;
  if (source != nullptr) {
    target = std::make_unique<FreshMemory>(driver, size);
    target->prepare_all();
  }
  FreshMemory fresh(driver, size);
  if (side == Side::kRegister) {
    for (std::size_t i = 0; i < fresh.chunks(); ++i) touch_chunk(fresh.chunk(i));
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> working{true};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto record = [&] {
    std::lock_guard lock(error_mutex);
    if (error == nullptr) error = std::current_exception();
  };
  std::size_t copied = 0;
  double copy_seconds = 0;
  const Clock::time_point start = Clock::now();
  std::thread copier;
  if (source != nullptr) {
    copier = std::thread([&] {
      try {
        const std::size_t chunks = target->chunks();
        if (chunks == 0) return;
        for (std::size_t i = 0; working.load(); i = (i + 4) % chunks) {
          for (std::size_t c = i; c < i + 4 && c < chunks; ++c) {
            source->copy_chunk(c, target->chunk(c));
            copied += kChunk;
          }
          source->wait();
        }
        copy_seconds = seconds_since(start);
      } catch (...) {
        record();
      }
    });
  }
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      try {
        for (std::size_t i = next++; i < fresh.chunks(); i = next++) {
          if (side != Side::kRegister) touch_chunk(fresh.chunk(i));
          if (side != Side::kFault) fresh.register_chunk(i);
        }
      } catch (...) {
        record();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double side_seconds = seconds_since(start);
  working.store(false);
  if (copier.joinable()) copier.join();
  if (error != nullptr) std::rethrow_exception(error);
  return {static_cast<double>(size) / side_seconds / 1e9,
          copy_seconds > 0 ? static_cast<double>(copied) / copy_seconds / 1e9 : 0.0};
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// A pause of many allocations also unmaps and releases each one. With
// memory registered beforehand those calls hide behind the copies
// (unmap_overlap_probe.cpp); this table asks whether they also hide behind
// a cold pause's preparation, whose registrations go through the same
// driver. As many 20 MiB allocations as fit in `size` (the engine holds
// 410 for 8 GiB of torch's 20 MiB segments), arrangement `a`.
void calls_beside_the_pause(tms::Driver& driver, std::size_t size, const Arrangement& a,
                            DeviceSource& source, double floor) {
  const std::size_t each = tms::round_up(std::size_t{20} << 20, driver.granularity(0));
  const std::size_t count = std::max<std::size_t>(1, size / each);
  const std::vector<std::uint8_t> fill(each, 1);
  const tms::StreamHandle stream = driver.create_stream(0);
  struct Row {
    const char* name;
    Calls calls;
  };
  const Row rows[] = {{"no calls", Calls::kNone},
                      {"calls after the copies", Calls::kAfter},
                      {"calls beside the pause", Calls::kBeside}};
  std::vector<std::vector<double>> paused(std::size(rows));
  std::vector<double> alone;
  for (int round = 0; round < kRounds; ++round) {
    for (std::size_t r = 0; r < std::size(rows); ++r) {
      tms::bench::VmmAllocations allocations(driver, 0, count, each, fill.data(), stream);
      paused[r].push_back(run(driver, size, a, &source, &allocations, rows[r].calls).total);
    }
    tms::bench::VmmAllocations allocations(driver, 0, count, each, fill.data(), stream);
    const Clock::time_point start = Clock::now();
    allocations.give_back_all();
    alone.push_back(seconds_since(start));
  }
  driver.destroy_stream(0, stream);
  const double bytes = static_cast<double>(size);
  std::printf("\n%s, %zu allocations of %zu MiB unmapped and released (alone %.1f ms):\n",
              a.name.c_str(), count, each >> 20, median(alone) * 1e3);
  std::printf("%-32s %10s %8s %8s\n", "calls", "pause ms", "ratio", "worst");
  for (std::size_t r = 0; r < std::size(rows); ++r) {
    const double slowest = *std::max_element(paused[r].begin(), paused[r].end());
    std::printf("%-32s %10.1f %7.2fx %7.2fx\n", rows[r].name, median(paused[r]) * 1e3,
                bytes / median(paused[r]) / 1e9 / floor, bytes / slowest / 1e9 / floor);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t gib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 8;
  const unsigned threads = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 8;
  const std::size_t size = gib << 30;
  const double bytes = static_cast<double>(size);
  if (gib == 0 || threads < 3) {
    std::fprintf(stderr, "usage: tms_cold_pause_probe [GiB>0] [threads>=3] [cuda|sim]\n");
    return 2;
  }
  try {
    std::unique_ptr<tms::Driver> loaded;
    if (argc > 3 && std::string(argv[3]) == "sim") {
      tms::SimDriverOptions options;
      options.capacity_bytes =
          std::max(options.capacity_bytes, 2 * size);  // and the calls' allocations
      loaded = std::make_unique<tms::SimDriver>(options);
    } else {
      loaded = std::make_unique<tms::CudaDriver>();
    }
    tms::Driver& driver = *loaded;
    (void)driver.device_count();  // loads the driver; throws without one
    DeviceSource source(driver, 0, size);
    const unsigned twice = 2 * threads;
    const std::vector<Arrangement> arrangements = {
        {"touch+register x" + std::to_string(threads), Fault::kTouch, threads, 0},
        {"touch+register x" + std::to_string(twice), Fault::kTouch, twice, 0},
        {"populate+register x" + std::to_string(threads), Fault::kPopulate, threads, 0},
        {"register only x" + std::to_string(threads), Fault::kNone, threads, 0},
        {"split " + std::to_string(threads - 1) + "/1", Fault::kTouch, threads - 1, 1},
        {"split " + std::to_string(threads - 2) + "/2", Fault::kTouch, threads - 2, 2},
        {"split " + std::to_string(twice - 2) + "/2", Fault::kTouch, twice - 2, 2},
        {"split " + std::to_string(twice - 4) + "/4", Fault::kTouch, twice - 4, 4},
        {"touch+register x" + std::to_string(threads) + " +own copies", Fault::kTouch, threads, 0,
         true},
        {"touch+register x" + std::to_string(twice) + " +own copies", Fault::kTouch, twice, 0,
         true},
        {"split " + std::to_string(twice - 2) + "/2 +own copies", Fault::kTouch, twice - 2, 2,
         true},
    };
    // Once first, untimed: memory nobody touched since boot costs more to
    // fault in on a virtual machine, and that is not what is compared here.
    (void)run(driver, size, arrangements.front(), nullptr);
    std::vector<std::vector<double>> alone(arrangements.size());
    std::vector<std::vector<double>> prepared(arrangements.size());
    std::vector<std::vector<double>> paused(arrangements.size());
    std::vector<double> warm;
    for (int round = 0; round < kRounds; ++round) {
      warm.push_back(warm_copy(driver, size, source));
      for (std::size_t a = 0; a < arrangements.size(); ++a) {
        alone[a].push_back(run(driver, size, arrangements[a], nullptr).prepared);
        const Timing timing = run(driver, size, arrangements[a], &source);
        prepared[a].push_back(timing.prepared);
        paused[a].push_back(timing.total);
      }
    }
    const double floor = bytes / median(warm) / 1e9;
    std::printf(
        "copy into registered memory (floor): %.1f GB/s; %zu GiB, 64 MiB chunks, "
        "median of %d\n",
        floor, gib, kRounds);
    // The worst round too: a loop's every cycle is held to the slowest, so
    // the spread of the floor itself matters, not only its median.
    std::printf("%-32s %10s %16s %10s %8s %8s\n", "arrangement", "prepare", "prepare+copies",
                "pause", "ratio", "worst");
    for (std::size_t a = 0; a < arrangements.size(); ++a) {
      const double pause = bytes / median(paused[a]) / 1e9;
      const double slowest = *std::max_element(paused[a].begin(), paused[a].end());
      std::printf("%-32s %10.1f %16.1f %10.1f %7.2fx %7.2fx\n", arrangements[a].name.c_str(),
                  bytes / median(alone[a]) / 1e9, bytes / median(prepared[a]) / 1e9, pause,
                  pause / floor, bytes / slowest / 1e9 / floor);
      std::fflush(stdout);
    }
    calls_beside_the_pause(driver, size, arrangements[8], source, floor);

    std::printf("\n%-22s %12s %14s %14s %10s\n", "host side work", "alone", "beside copies",
                "copies beside", "sum");
    struct Row {
      const char* name;
      Side side;
      unsigned threads;
    };
    for (const Row& row :
         {Row{"fault-in", Side::kFault, threads}, Row{"fault-in", Side::kFault, twice},
          Row{"register", Side::kRegister, 1}, Row{"register", Side::kRegister, 2},
          Row{"fault+register", Side::kBoth, threads}, Row{"fault+register", Side::kBoth, twice}}) {
      std::vector<double> lone, work, copy;
      for (int round = 0; round < kRounds; ++round) {
        lone.push_back(side_work(driver, size, nullptr, row.side, row.threads).side);
        const Shared shared = side_work(driver, size, &source, row.side, row.threads);
        work.push_back(shared.side);
        copy.push_back(shared.copy);
      }
      const std::string name = std::string(row.name) + " x" + std::to_string(row.threads);
      std::printf("%-22s %12.1f %14.1f %14.1f %10.1f\n", name.c_str(), median(lone), median(work),
                  median(copy), median(work) + median(copy));
      std::fflush(stdout);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tms_cold_pause_probe: %s\n", error.what());
    return 1;
  }
  return 0;
}
