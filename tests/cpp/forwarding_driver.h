// A Driver that passes every call to another one: tests derive from it and
// override only the calls they watch or change.
#pragma once

#include "driver/driver.h"

namespace tms::testing {

class ForwardingDriver : public Driver {
 public:
  explicit ForwardingDriver(Driver& target) : target_(target) {}

  [[nodiscard]] std::string_view name() const override { return target_.name(); }
  int device_count() override { return target_.device_count(); }
  int current_device() override { return target_.current_device(); }
  std::size_t granularity(int device) override { return target_.granularity(device); }
  DeviceMemoryInfo memory_info(int device) override { return target_.memory_info(device); }
  void synchronize(int device) override { target_.synchronize(device); }
  bool capture_underway(int device) override { return target_.capture_underway(device); }
  DevicePtr reserve(std::size_t size, std::size_t alignment) override {
    return target_.reserve(size, alignment);
  }
  void free_reservation(DevicePtr va, std::size_t size) override {
    target_.free_reservation(va, size);
  }
  PhysicalHandle create_physical(int device, std::size_t size) override {
    return target_.create_physical(device, size);
  }
  void release_physical(PhysicalHandle handle) override { target_.release_physical(handle); }
  void map(DevicePtr va, std::size_t size, PhysicalHandle handle) override {
    target_.map(va, size, handle);
  }
  void unmap(DevicePtr va, std::size_t size) override { target_.unmap(va, size); }
  void set_access(DevicePtr va, std::size_t size, int device) override {
    target_.set_access(va, size, device);
  }
  void* host_alloc(std::size_t size) override { return target_.host_alloc(size); }
  void host_free(void* ptr, std::size_t size) override { target_.host_free(ptr, size); }
  void host_register(void* ptr, std::size_t size) override { target_.host_register(ptr, size); }
  void host_unregister(void* ptr) override { target_.host_unregister(ptr); }
  StreamHandle create_stream(int device) override { return target_.create_stream(device); }
  void destroy_stream(int device, StreamHandle stream) override {
    target_.destroy_stream(device, stream);
  }
  void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                          StreamHandle stream) override {
    target_.copy_to_host_async(device, dst, src, size, stream);
  }
  void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                            StreamHandle stream) override {
    target_.copy_to_device_async(device, dst, src, size, stream);
  }
  void synchronize_stream(int device, StreamHandle stream) override {
    target_.synchronize_stream(device, stream);
  }
  EventHandle create_event(int device) override { return target_.create_event(device); }
  void destroy_event(int device, EventHandle event) override {
    target_.destroy_event(device, event);
  }
  void record_event(int device, EventHandle event, StreamHandle stream) override {
    target_.record_event(device, event, stream);
  }
  void synchronize_event(int device, EventHandle event) override {
    target_.synchronize_event(device, event);
  }
  void codec_prepare(int device) override { target_.codec_prepare(device); }
  void stream_wait_event(int device, StreamHandle stream, EventHandle event) override {
    target_.stream_wait_event(device, stream, event);
  }
  void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                           StreamHandle stream) override {
    target_.codec_measure_async(device, src, size, sizes, stream);
  }
  void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                          DevicePtr dst, StreamHandle stream) override {
    target_.codec_encode_async(device, src, size, sizes, dst, stream);
  }
  void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                          StreamHandle stream) override {
    target_.codec_decode_async(device, stored, dst, size, stream);
  }

 private:
  Driver& target_;
};

}  // namespace tms::testing
