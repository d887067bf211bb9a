// CudaDriver: the Driver contract on the real CUDA driver API.
//
// libcuda is loaded at run time (dlopen + cuGetProcAddress), never linked, so
// one build serves every CUDA 12/13 driver and a process without a GPU can
// still load the library (docs/architecture.md, "The driver seam"). Loading
// happens on load() or the first call that needs the driver; if it fails,
// that call and every later one throws DriverUnavailable with the same
// message.
//
// Device operations run under the device's primary context, the one PyTorch
// and the CUDA runtime use, so memory made here is the same memory torch sees.
// This header does not include <cuda.h>: only cuda_driver.cpp needs the CUDA
// headers.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "driver/driver.h"

namespace tms {

class CudaDriver final : public Driver {
 public:
  /// Never fails: the library at `library_path` is opened on first use.
  explicit CudaDriver(std::string library_path = "libcuda.so.1");
  /// Releases the primary contexts this object retained (skipped in a forked
  /// child, and driver errors are ignored). Never unloads libcuda.
  ~CudaDriver() override;

  [[nodiscard]] std::string_view name() const override { return "cuda"; }
  [[nodiscard]] const std::string& library_path() const noexcept;
  /// Loads libcuda and its entry points now (no cuInit, no context).
  /// @throws DriverUnavailable, naming what is missing.
  void load();

  int device_count() override;
  /// Device of the calling thread's current context; 0 when it has none.
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
  void codec_prepare(int device) override;
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override;
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override;
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override;

 private:
  struct State;  // the loaded entry points and per-device caches (cuda_driver.cpp)
  std::unique_ptr<State> state_;
};

}  // namespace tms
