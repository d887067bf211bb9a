// A Driver that forwards every call to a SimDriver: tests derive from it and
// override the calls they watch (what a copy touches, the order of calls).
#pragma once

#include "driver/sim_driver.h"

namespace tms::testing {

class ForwardingDriver : public Driver {
 public:
  explicit ForwardingDriver(SimDriver& sim) : sim_(sim) {}

  [[nodiscard]] std::string_view name() const override { return "forwarding"; }
  int device_count() override { return sim_.device_count(); }
  int current_device() override { return sim_.current_device(); }
  std::size_t granularity(int device) override { return sim_.granularity(device); }
  DeviceMemoryInfo memory_info(int device) override { return sim_.memory_info(device); }
  void synchronize(int device) override { sim_.synchronize(device); }
  bool capture_underway(int device) override { return sim_.capture_underway(device); }
  DevicePtr reserve(std::size_t size, std::size_t alignment) override {
    return sim_.reserve(size, alignment);
  }
  void free_reservation(DevicePtr va, std::size_t size) override {
    sim_.free_reservation(va, size);
  }
  PhysicalHandle create_physical(int device, std::size_t size) override {
    return sim_.create_physical(device, size);
  }
  void release_physical(PhysicalHandle handle) override { sim_.release_physical(handle); }
  void map(DevicePtr va, std::size_t size, PhysicalHandle handle) override {
    sim_.map(va, size, handle);
  }
  void unmap(DevicePtr va, std::size_t size) override { sim_.unmap(va, size); }
  void set_access(DevicePtr va, std::size_t size, int device) override {
    sim_.set_access(va, size, device);
  }
  void* host_alloc(std::size_t size, HostMemoryKind kind) override {
    return sim_.host_alloc(size, kind);
  }
  void host_free(void* ptr, std::size_t size, HostMemoryKind kind) override {
    sim_.host_free(ptr, size, kind);
  }
  void host_register(void* ptr, std::size_t size) override { sim_.host_register(ptr, size); }
  void host_unregister(void* ptr) override { sim_.host_unregister(ptr); }
  StreamHandle create_stream(int device) override { return sim_.create_stream(device); }
  void destroy_stream(int device, StreamHandle stream) override {
    sim_.destroy_stream(device, stream);
  }
  void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                          StreamHandle stream) override {
    sim_.copy_to_host_async(device, dst, src, size, stream);
  }
  void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                            StreamHandle stream) override {
    sim_.copy_to_device_async(device, dst, src, size, stream);
  }
  void synchronize_stream(int device, StreamHandle stream) override {
    sim_.synchronize_stream(device, stream);
  }
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override {
    sim_.codec_measure_async(device, src, size, sizes, stream);
  }
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override {
    sim_.codec_encode_async(device, src, size, sizes, dst, stream);
  }
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override {
    sim_.codec_decode_async(device, stored, dst, size, stream);
  }

 protected:
  SimDriver& sim_;
};

}  // namespace tms::testing
