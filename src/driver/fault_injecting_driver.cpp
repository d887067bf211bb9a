#include "driver/fault_injecting_driver.h"

#include <optional>
#include <string>

#include "common/errors.h"

namespace tms {
namespace {

#define TMS_DRIVER_CALL_NAME(enumerator, name) name,
constexpr std::string_view kCallNames[] = {TMS_DRIVER_CALLS(TMS_DRIVER_CALL_NAME)};
#undef TMS_DRIVER_CALL_NAME
static_assert(std::size(kCallNames) == static_cast<std::size_t>(DriverCall::kCount));

}  // namespace

std::string_view driver_call_name(DriverCall call) {
  return kCallNames[static_cast<std::size_t>(call)];
}

DriverCall parse_driver_call(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kCallNames); ++i) {
    if (kCallNames[i] == name) return static_cast<DriverCall>(i);
  }
  throw InvalidArgument("unknown driver call '" + std::string(name) +
                        "' (expected one of reserve, map, create_physical, ... as in "
                        "tms_testing.h)");
}

void FaultInjectingDriver::enter(DriverCall call) {
  std::optional<InjectedFailure> failure;
  {
    std::lock_guard lock(mutex_);
    failure = failures_.next(call);
    if (!failure) return;
    for (std::size_t kind = 0; kind < counts_at_failure_.size(); ++kind) {
      counts_at_failure_[kind] = failures_.count(static_cast<DriverCall>(kind));
    }
  }
  // Named like the target's own errors ("sim.map", "cuda.map"), so that
  // messages and tests read the same whichever driver failed.
  const std::string where = std::string(target_.name()) + "." + std::string(driver_call_name(call));
  if (*failure == InjectedFailure::kOutOfMemory) {
    throw OutOfMemory(where, "injected out-of-memory", 0, 0);
  }
  throw DriverError(where, "CUDA_ERROR_INJECTED", "injected failure");
}

void FaultInjectingDriver::fail_call(DriverCall call, int nth, InjectedFailure failure) {
  if (nth < 1) throw InvalidArgument("fail_call: nth must be >= 1");
  std::lock_guard lock(mutex_);
  failures_.add(call, nth, failure);
}

void FaultInjectingDriver::clear_failures() {
  std::lock_guard lock(mutex_);
  failures_.clear();
}

std::size_t FaultInjectingDriver::call_count(DriverCall call) const {
  std::lock_guard lock(mutex_);
  return failures_.count(call);
}

std::size_t FaultInjectingDriver::call_count_at_last_failure(DriverCall call) const {
  std::lock_guard lock(mutex_);
  return counts_at_failure_[static_cast<std::size_t>(call)];
}

void FaultInjectingDriver::synchronize(int device) {
  enter(DriverCall::kSynchronize);
  target_.synchronize(device);
}

bool FaultInjectingDriver::capture_underway(int device) {
  enter(DriverCall::kCaptureUnderway);
  return target_.capture_underway(device);
}

DevicePtr FaultInjectingDriver::reserve(std::size_t size, std::size_t alignment) {
  enter(DriverCall::kReserve);
  return target_.reserve(size, alignment);
}

void FaultInjectingDriver::free_reservation(DevicePtr va, std::size_t size) {
  enter(DriverCall::kFreeReservation);
  target_.free_reservation(va, size);
}

PhysicalHandle FaultInjectingDriver::create_physical(int device, std::size_t size) {
  enter(DriverCall::kCreatePhysical);
  return target_.create_physical(device, size);
}

void FaultInjectingDriver::release_physical(PhysicalHandle handle) {
  enter(DriverCall::kReleasePhysical);
  target_.release_physical(handle);
}

void FaultInjectingDriver::map(DevicePtr va, std::size_t size, PhysicalHandle handle) {
  enter(DriverCall::kMap);
  target_.map(va, size, handle);
}

void FaultInjectingDriver::unmap(DevicePtr va, std::size_t size) {
  enter(DriverCall::kUnmap);
  target_.unmap(va, size);
}

void FaultInjectingDriver::set_access(DevicePtr va, std::size_t size, int device) {
  enter(DriverCall::kSetAccess);
  target_.set_access(va, size, device);
}

void* FaultInjectingDriver::host_alloc(std::size_t size) {
  enter(DriverCall::kHostAlloc);
  return target_.host_alloc(size);
}

void FaultInjectingDriver::host_free(void* ptr, std::size_t size) {
  enter(DriverCall::kHostFree);
  target_.host_free(ptr, size);
}

void FaultInjectingDriver::host_register(void* ptr, std::size_t size) {
  enter(DriverCall::kHostRegister);
  target_.host_register(ptr, size);
}

void FaultInjectingDriver::host_unregister(void* ptr) {
  enter(DriverCall::kHostUnregister);
  target_.host_unregister(ptr);
}

StreamHandle FaultInjectingDriver::create_stream(int device) {
  enter(DriverCall::kCreateStream);
  return target_.create_stream(device);
}

void FaultInjectingDriver::destroy_stream(int device, StreamHandle stream) {
  enter(DriverCall::kDestroyStream);
  target_.destroy_stream(device, stream);
}

void FaultInjectingDriver::copy_to_host_async(int device, void* dst, DevicePtr src,
                                              std::size_t size, StreamHandle stream) {
  enter(DriverCall::kCopyToHost);
  target_.copy_to_host_async(device, dst, src, size, stream);
}

void FaultInjectingDriver::copy_to_device_async(int device, DevicePtr dst, const void* src,
                                                std::size_t size, StreamHandle stream) {
  enter(DriverCall::kCopyToDevice);
  target_.copy_to_device_async(device, dst, src, size, stream);
}

void FaultInjectingDriver::synchronize_stream(int device, StreamHandle stream) {
  enter(DriverCall::kSynchronizeStream);
  target_.synchronize_stream(device, stream);
}

EventHandle FaultInjectingDriver::create_event(int device) {
  enter(DriverCall::kCreateEvent);
  return target_.create_event(device);
}

void FaultInjectingDriver::destroy_event(int device, EventHandle event) {
  enter(DriverCall::kDestroyEvent);
  target_.destroy_event(device, event);
}

void FaultInjectingDriver::record_event(int device, EventHandle event, StreamHandle stream) {
  enter(DriverCall::kRecordEvent);
  target_.record_event(device, event, stream);
}

void FaultInjectingDriver::synchronize_event(int device, EventHandle event) {
  // A failure here stands for a copy that failed after it was queued: the
  // marked work still runs (as on a GPU), only its outcome is an error.
  enter(DriverCall::kSynchronizeEvent);
  target_.synchronize_event(device, event);
}

void FaultInjectingDriver::stream_wait_event(int device, StreamHandle stream, EventHandle event) {
  enter(DriverCall::kStreamWaitEvent);
  target_.stream_wait_event(device, stream, event);
}

void FaultInjectingDriver::codec_prepare(int device) {
  enter(DriverCall::kCodec);
  target_.codec_prepare(device);
}

void FaultInjectingDriver::codec_measure_async(int device, DevicePtr src, std::size_t size,
                                               DevicePtr sizes, StreamHandle stream) {
  enter(DriverCall::kCodec);
  target_.codec_measure_async(device, src, size, sizes, stream);
}

void FaultInjectingDriver::codec_encode_async(int device, DevicePtr src, std::size_t size,
                                              DevicePtr sizes, DevicePtr dst, StreamHandle stream) {
  enter(DriverCall::kCodec);
  target_.codec_encode_async(device, src, size, sizes, dst, stream);
}

void FaultInjectingDriver::codec_decode_async(int device, DevicePtr stored, DevicePtr dst,
                                              std::size_t size, StreamHandle stream) {
  enter(DriverCall::kCodec);
  target_.codec_decode_async(device, stored, dst, size, stream);
}

}  // namespace tms
