// SimDriver: the Driver contract on host memory, so the engine runs and is
// tested without a GPU (docs/testing.md).
//
//   reserve          mmap(PROT_NONE, MAP_NORESERVE)       -> touching faults
//   create_physical  memfd_create + ftruncate              -> counted against capacity
//   map              mmap(MAP_FIXED | MAP_SHARED, memfd)   -> fresh pages read as zero
//   unmap            mmap(MAP_FIXED, PROT_NONE) again      -> touching faults again
//   copies           memcpy (synchronous; streams are tokens), or queued per
//                    stream until it, an event on it or the device is
//                    synchronized (set_copies_deferred: ordering tests)
//   events           the stream they were recorded on; waiting runs its copies
//   codec kernels    the CPU reference codec (codec/cpu_codec.h), synchronous
//
// It keeps byte accounting per device and for host memory so tests can prove
// nothing leaked. Failures are injected by wrapping it (or any driver) in a
// FaultInjectingDriver (driver/fault_injecting_driver.h).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string_view>
#include <vector>

#include "driver/driver.h"

namespace tms {

struct SimDriverOptions {
  int device_count = 1;
  std::size_t capacity_bytes = std::size_t{1} << 30;  // per device
  std::size_t granularity = std::size_t{2} << 20;     // as on H100/H200
};

class SimDriver final : public Driver {
 public:
  explicit SimDriver(SimDriverOptions options = {});
  ~SimDriver() override;

  // Driver
  [[nodiscard]] std::string_view name() const override { return "sim"; }
  int device_count() override;
  int current_device() override;
  std::size_t granularity(int device) override;
  DeviceMemoryInfo memory_info(int device) override;
  void synchronize(int device) override;
  bool capture_underway(int device) override;
  DevicePtr reserve(std::size_t size, std::size_t alignment) override;
  void free_reservation(DevicePtr va, std::size_t size) override;
  PhysicalHandle create_physical(int device, std::size_t size) override;
  void release_physical(PhysicalHandle handle) override;
  void map(DevicePtr va, std::size_t size, PhysicalHandle handle) override;
  void unmap(DevicePtr va, std::size_t size) override;
  void set_access(DevicePtr va, std::size_t size, int device) override;
  void* host_alloc(std::size_t size) override;
  void host_free(void* ptr, std::size_t size) override;
  void host_register(void* ptr, std::size_t size) override;
  void host_unregister(void* ptr) override;
  StreamHandle create_stream(int device) override;
  void destroy_stream(int device, StreamHandle stream) override;
  void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                          StreamHandle stream) override;
  void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                            StreamHandle stream) override;
  void synchronize_stream(int device, StreamHandle stream) override;
  EventHandle create_event(int device) override;
  void destroy_event(int device, EventHandle event) override;
  void record_event(int device, EventHandle event, StreamHandle stream) override;
  void synchronize_event(int device, EventHandle event) override;
  void stream_wait_event(int device, StreamHandle stream, EventHandle event) override;
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override;
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override;
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override;

  // --- test controls --------------------------------------------------------
  void set_capacity(std::size_t bytes_per_device);
  void set_current_device(int device);
  /// Simulates a stream capture on a blocking stream of `device` starting
  /// (true) or ending (false): capture_underway(device) reports it.
  void set_capturing(int device, bool capturing);
  /// While on, copies are queued on their stream instead of made at once,
  /// as a GPU runs them behind the caller: they happen when their stream, an
  /// event recorded on it or their device is synchronized (or a stream waits
  /// for such an event, or a codec kernel runs on that stream). Turning it
  /// off runs nothing; what is queued still waits for one of those.
  void set_copies_deferred(bool deferred);
  /// Copies queued and not yet made (set_copies_deferred).
  [[nodiscard]] std::size_t deferred_copies() const;
  /// While on, synchronize_event and stream_wait_event block until it is
  /// turned off: the copies behind a non-blocking resume stay "in flight"
  /// for as long as a test needs.
  void hold_event_waits(bool held);

  // --- accounting ---------------------------------------------------------------
  [[nodiscard]] std::size_t physical_bytes(int device) const;  // created, not released
  /// physical_bytes() of every device, in device order.
  [[nodiscard]] std::vector<std::size_t> physical_bytes_per_device() const;
  [[nodiscard]] std::size_t reserved_bytes() const;  // VA reserved
  [[nodiscard]] std::size_t mapped_bytes() const;
  /// Mapped bytes the device may read and write (set_access done): what a
  /// kernel could touch without faulting.
  [[nodiscard]] std::size_t accessible_bytes() const;
  [[nodiscard]] std::size_t host_bytes() const;  // host_alloc'ed, not freed
  [[nodiscard]] std::size_t live_streams() const;
  [[nodiscard]] std::size_t live_events() const;
  [[nodiscard]] std::size_t registered_host_ranges() const;

 private:
  struct Physical {
    int fd;
    int device;
    std::size_t size;
  };

  void check_device(int device, std::string_view call) const;
  /// Makes `copy` now, or queues it on `stream` while copies are deferred.
  void copy_or_defer(StreamHandle stream, std::function<void()> copy);
  /// Makes the copies queued on `stream` (every stream for nullptr), in order.
  void run_deferred(StreamHandle stream);
  Physical& physical_or_throw(PhysicalHandle handle, std::string_view call);

  SimDriverOptions options_;
  mutable std::mutex mutex_;
  std::map<PhysicalHandle, Physical> physical_;
  PhysicalHandle next_handle_ = 1;
  std::map<DevicePtr, std::size_t> reservations_;
  std::map<DevicePtr, std::size_t> mappings_;
  std::map<DevicePtr, std::size_t> accessible_;    // mappings after set_access
  std::map<void*, std::size_t> host_allocations_;  // by start; pieces after a partial free
  std::map<void*, std::size_t> host_registrations_;
  std::vector<std::size_t> physical_bytes_;
  std::vector<bool> capturing_;  // per device, see set_capturing
  std::size_t live_streams_ = 0;
  std::uintptr_t next_stream_ = 1;
  bool copies_deferred_ = false;
  std::mutex deferred_runner_;  // held while queued copies are made (run_deferred)
  std::map<StreamHandle, std::vector<std::function<void()>>> deferred_;
  std::map<EventHandle, StreamHandle> events_;  // the stream last recorded on
  std::uintptr_t next_event_ = 1;
  bool event_waits_held_ = false;
  std::condition_variable event_waits_released_;
};

}  // namespace tms
