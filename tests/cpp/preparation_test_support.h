// Helpers for tests of copies into host memory still being prepared (the
// hand-over of copies to the preparing threads): a driver that holds the
// registrations back and watches who queues copies and when, device memory
// to copy from, and the two put together with a fresh host buffer.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "common/sizes.h"
#include "driver/driver.h"
#include "driver/sim_driver.h"
#include "faulty_sim.h"
#include "forwarding_driver.h"
#include "test_support.h"

namespace tms::testing {

/// Holds every host_register until open() or until a stream is waited for
/// (the caller is done queueing then), records which threads queue copies
/// to the host, and counts the copies queued after a stream was waited for
/// (after an unwinding drained the streams, none may start).
class GatedRegisterDriver final : public ForwardingDriver {
 public:
  explicit GatedRegisterDriver(Driver& target) : ForwardingDriver(target) {}

  void host_register(void* ptr, std::size_t size) override {
    {
      std::unique_lock lock(mutex_);
      most_registering_ = std::max(most_registering_, ++registering_);
      opened_.wait(lock, [&] { return open_; });
    }
    // Counted out however the registration ends: one that failed would
    // otherwise count as still running in most_registering.
    struct Leave {
      GatedRegisterDriver& driver;
      ~Leave() {
        std::lock_guard lock(driver.mutex_);
        --driver.registering_;
      }
    } leave{*this};
    ForwardingDriver::host_register(ptr, size);
  }
  void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                          StreamHandle stream) override {
    {
      std::lock_guard lock(mutex_);
      copy_threads_.push_back(std::this_thread::get_id());
      if (stream_waited_) ++copies_after_a_stream_wait_;
    }
    ForwardingDriver::copy_to_host_async(device, dst, src, size, stream);
  }
  void synchronize_stream(int device, StreamHandle stream) override {
    {
      std::lock_guard lock(mutex_);
      stream_waited_ = true;
      open_ = open_ || open_on_stream_wait_;
      opened_.notify_all();
    }
    ForwardingDriver::synchronize_stream(device, stream);
  }

  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }
  /// Holds registrations again, until open() only (a stream wait no longer
  /// opens), and forgets the copies and stream waits seen so far.
  void close() {
    std::lock_guard lock(mutex_);
    open_ = false;
    open_on_stream_wait_ = false;
    stream_waited_ = false;
    copy_threads_.clear();
    copies_after_a_stream_wait_ = 0;
  }
  [[nodiscard]] std::vector<std::thread::id> copy_threads() const {
    std::lock_guard lock(mutex_);
    return copy_threads_;
  }
  /// The most threads that were in host_register at once.
  [[nodiscard]] std::size_t most_registering() const {
    std::lock_guard lock(mutex_);
    return most_registering_;
  }
  [[nodiscard]] std::size_t copies_after_a_stream_wait() const {
    std::lock_guard lock(mutex_);
    return copies_after_a_stream_wait_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
  bool open_on_stream_wait_ = true;
  bool stream_waited_ = false;
  std::vector<std::thread::id> copy_threads_;
  std::size_t copies_after_a_stream_wait_ = 0;
  std::size_t registering_ = 0;
  std::size_t most_registering_ = 0;
};

/// Device memory of `size` bytes on device 0, filled with a pattern.
class PatternedDeviceMemory {
 public:
  PatternedDeviceMemory(Driver& driver, std::size_t size)
      : driver_(driver), size_(round_up(size, driver.granularity(0))) {
    va_ = driver.reserve(size_, driver.granularity(0));
    handle_ = driver.create_physical(0, size_);
    driver.map(va_, size_, handle_);
    driver.set_access(va_, size_, 0);
    fill_pattern(va_, size_, 42);
  }
  ~PatternedDeviceMemory() {
    driver_.unmap(va_, size_);
    driver_.release_physical(handle_);
    driver_.free_reservation(va_, size_);
  }
  PatternedDeviceMemory(const PatternedDeviceMemory&) = delete;
  PatternedDeviceMemory& operator=(const PatternedDeviceMemory&) = delete;

  [[nodiscard]] DevicePtr va() const { return va_; }

 private:
  Driver& driver_;
  std::size_t size_;
  DevicePtr va_ = 0;
  PhysicalHandle handle_ = 0;
};

/// 1 MiB of patterned device memory and a fresh 1 MiB host buffer of 16
/// registered chunks of 64 KiB, prepared by two threads that
/// GatedRegisterDriver holds in their first registration: every copy queued
/// into it before the gate opens is handed over.
struct GatedCopySetup {
  static constexpr std::size_t kSize = std::size_t{1} << 20;

  explicit GatedCopySetup(std::size_t copy_chunk_bytes)
      : pipeline(driver, {.chunk_bytes = copy_chunk_bytes, .streams_per_device = 2}) {}

  static HostMemoryOptions host_options() {
    HostMemoryOptions options;
    options.register_chunk_bytes = 64 * 1024;
    options.prepare_threads = 2;
    return options;
  }

  /// The whole device memory into the whole buffer.
  [[nodiscard]] std::vector<CopyItem> items() const {
    return {{0, device.va(), batch.buffers[0].data(), kSize, &batch.buffers[0]}};
  }

  FaultySim sim{{.device_count = 1, .capacity_bytes = 64 * kSize}};
  GatedRegisterDriver driver{sim};
  HostMemory host{driver, host_options()};
  CopyPipeline pipeline;
  PatternedDeviceMemory device{driver, kSize};
  HostBatch batch = host.acquire({{kSize, HostMemoryKind::kMmap}});
};

}  // namespace tms::testing
