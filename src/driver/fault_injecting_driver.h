// FaultInjectingDriver: a Driver that passes every call to another one and
// can make the N-th call of a given kind fail first, the way the real call
// would (OutOfMemory or DriverError, naming the call). The engine's
// all-or-nothing guarantees are tested through it on any driver: over
// SimDriver in the unit tests, over CudaDriver on a GPU
// (tests/gpu/fault_injection_run.cpp), and the process-wide runtime always
// wraps its driver in one so that tms_sim_fail_call (tms_testing.h) works
// whichever driver runs.
//
// Cost: each counted call takes one mutex to count itself and consult the
// schedule, released before the call is passed on. Every counted call is a
// driver call of microseconds or more (a VMM call, a host registration, a
// copy of a whole chunk, a stream synchronization), so an uncontended lock of
// tens of nanoseconds is not measurable, and threads copying in parallel
// never wait on each other's driver calls. Queries the engine makes often
// (current_device, granularity, memory_info, device_count) are not counted
// and take no lock.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string_view>

#include "common/failure_schedule.h"
#include "driver/driver.h"

namespace tms {

/// Each Driver method that can be made to fail, written once as (enumerator,
/// name): DriverCall, driver_call_name() and parse_driver_call() are made
/// from this list. tms_testing.h lists the names for tms_sim_fail_call
/// (fault_injecting_driver_test checks that it names every one, in order).
#define TMS_DRIVER_CALLS(X)                   \
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
  X(kCreateEvent, "create_event")             \
  X(kDestroyEvent, "destroy_event")           \
  X(kRecordEvent, "record_event")             \
  X(kSynchronizeEvent, "synchronize_event")   \
  X(kStreamWaitEvent, "stream_wait_event")    \
  X(kCaptureUnderway, "capture_underway")     \
  X(kCodec, "codec") /* codec_measure/encode/decode_async */

#define TMS_DRIVER_CALL_ENUMERATOR(enumerator, name) enumerator,
enum class DriverCall { TMS_DRIVER_CALLS(TMS_DRIVER_CALL_ENUMERATOR) kCount };
#undef TMS_DRIVER_CALL_ENUMERATOR

/// "create_physical" for DriverCall::kCreatePhysical, and so on.
std::string_view driver_call_name(DriverCall call);
/// Parses a name from driver_call_name(); throws InvalidArgument when unknown.
DriverCall parse_driver_call(std::string_view name);

/// How an injected failure fails: OutOfMemory or DriverError.
enum class InjectedFailure { kOutOfMemory, kDriverError };

class FaultInjectingDriver : public Driver {
 public:
  /// `target` must outlive this object.
  explicit FaultInjectingDriver(Driver& target) : target_(target) {}

  [[nodiscard]] Driver& target() const { return target_; }

  // --- test controls --------------------------------------------------------
  /// The `nth` (1-based) next call of `call` throws before reaching the
  /// target; earlier ones pass. @throws InvalidArgument for nth < 1.
  void fail_call(DriverCall call, int nth, InjectedFailure failure = InjectedFailure::kDriverError);
  /// Forgets every pending failure.
  void clear_failures();
  /// How many times `call` has been made through this object.
  [[nodiscard]] std::size_t call_count(DriverCall call) const;
  /// call_count(call) when the most recent injected failure fired (0 before
  /// any): tells the calls made before a failure from those made after it.
  [[nodiscard]] std::size_t call_count_at_last_failure(DriverCall call) const;

  // --- Driver -------------------------------------------------------------
  [[nodiscard]] std::string_view name() const override { return target_.name(); }
  int device_count() override { return target_.device_count(); }
  int current_device() override { return target_.current_device(); }
  std::size_t granularity(int device) override { return target_.granularity(device); }
  DeviceMemoryInfo memory_info(int device) override { return target_.memory_info(device); }
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
  void codec_prepare(int device) override;
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override;
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override;
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override;

 private:
  /// Counts one call of `call`; throws the injected failure when one is due.
  void enter(DriverCall call);

  Driver& target_;
  mutable std::mutex mutex_;  // guards the two members below
  FailureSchedule<DriverCall, InjectedFailure> failures_;
  std::array<std::size_t, static_cast<std::size_t>(DriverCall::kCount)> counts_at_failure_{};
};

}  // namespace tms
