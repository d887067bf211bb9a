// SimDriver: the Driver contract on host memory, so the engine runs and is
// tested without a GPU (docs/testing.md).
//
//   reserve          mmap(PROT_NONE, MAP_NORESERVE)       -> touching faults
//   create_physical  memfd_create + ftruncate              -> counted against capacity
//   map              mmap(MAP_FIXED | MAP_SHARED, memfd)   -> fresh pages read as zero
//   unmap            mmap(MAP_FIXED, PROT_NONE) again      -> touching faults again
//   copies           memcpy (synchronous; streams are tokens)
//   codec kernels    the CPU reference codec (codec/cpu_codec.h), synchronous
//
// It keeps byte accounting per device and for host memory so tests can prove
// nothing leaked, and it can make the N-th call of a given kind fail.
#pragma once

#include <array>
#include <cstddef>
#include <map>
#include <mutex>
#include <string_view>
#include <vector>

#include "common/failure_schedule.h"
#include "driver/driver.h"

namespace tms {

/// Each Driver method that can be made to fail, written once as (enumerator,
/// name): SimCall, sim_call_name() and parse_sim_call() are made from this
/// list. tms.h lists the names for tms_sim_fail_call (sim_driver_test checks
/// that it names every one, in this order).
#define TMS_SIM_CALLS(X)                      \
  X(kReserve, "reserve")                      \
  X(kFreeReservation, "free_reservation")     \
  X(kCreatePhysical, "create_physical")       \
  X(kReleasePhysical, "release_physical")     \
  X(kMap, "map")                              \
  X(kUnmap, "unmap")                          \
  X(kSetAccess, "set_access")                 \
  X(kHostAlloc, "host_alloc")                 \
  X(kHostFree, "host_free")                   \
  X(kHostRegister, "host_register")           \
  X(kHostUnregister, "host_unregister")       \
  X(kCopyToHost, "copy_to_host")              \
  X(kCopyToDevice, "copy_to_device")          \
  X(kSynchronize, "synchronize")              \
  X(kCreateStream, "create_stream")           \
  X(kDestroyStream, "destroy_stream")         \
  X(kSynchronizeStream, "synchronize_stream") \
  X(kCaptureUnderway, "capture_underway")     \
  X(kCodec, "codec") /* codec_measure/encode/decode_async */

#define TMS_SIM_CALL_ENUMERATOR(enumerator, name) enumerator,
enum class SimCall { TMS_SIM_CALLS(TMS_SIM_CALL_ENUMERATOR) kCount };
#undef TMS_SIM_CALL_ENUMERATOR

/// "create_physical" for SimCall::kCreatePhysical, and so on.
std::string_view sim_call_name(SimCall call);
/// Parses a name from sim_call_name(); throws InvalidArgument when unknown.
SimCall parse_sim_call(std::string_view name);

enum class SimFailure { kOutOfMemory, kDriverError };

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
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override;
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override;
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override;

  // --- test controls --------------------------------------------------------
  /// The `nth` (1-based) next call of `call` throws; earlier ones succeed.
  void fail_call(SimCall call, int nth, SimFailure failure = SimFailure::kDriverError);
  /// Forgets every pending failure.
  void clear_failures();
  /// How many times `call` has been made since construction.
  [[nodiscard]] std::size_t call_count(SimCall call) const;
  /// call_count(call) when the most recent injected failure fired (0 before
  /// any): tells the calls made before a failure from those made after it.
  [[nodiscard]] std::size_t call_count_at_last_failure(SimCall call) const;
  void set_capacity(std::size_t bytes_per_device);
  void set_current_device(int device);
  /// Simulates a stream capture on a blocking stream of `device` starting
  /// (true) or ending (false): capture_underway(device) reports it.
  void set_capturing(int device, bool capturing);

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
  [[nodiscard]] std::size_t registered_host_ranges() const;

 private:
  struct Physical {
    int fd;
    int device;
    std::size_t size;
  };

  void enter(SimCall call);  // counts the call, throws if a failure is due
  void check_device(int device, std::string_view call) const;
  Physical& physical_or_throw(PhysicalHandle handle, std::string_view call);

  SimDriverOptions options_;
  mutable std::mutex mutex_;
  FailureSchedule<SimCall, SimFailure> failures_;
  std::map<PhysicalHandle, Physical> physical_;
  PhysicalHandle next_handle_ = 1;
  std::map<DevicePtr, std::size_t> reservations_;
  std::map<DevicePtr, std::size_t> mappings_;
  std::map<DevicePtr, std::size_t> accessible_;  // mappings after set_access
  std::array<std::size_t, static_cast<std::size_t>(SimCall::kCount)> counts_at_failure_{};
  std::map<void*, std::size_t> host_allocations_;  // by start; pieces after a partial free
  std::map<void*, std::size_t> host_registrations_;
  std::vector<std::size_t> physical_bytes_;
  std::vector<bool> capturing_;  // per device, see set_capturing
  std::size_t live_streams_ = 0;
  std::uintptr_t next_stream_ = 1;
};

}  // namespace tms
