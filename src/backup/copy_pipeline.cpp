#include "backup/copy_pipeline.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <string>

#include "common/errors.h"
#include "common/log.h"

namespace tms {

CopyPipeline::CopyPipeline(Driver& driver, CopyPipelineOptions options)
    : driver_(driver), options_(options) {
  if (options_.chunk_bytes == 0) throw InvalidArgument("copy chunk size must be positive");
  if (options_.streams_per_device == 0) {
    throw InvalidArgument("the copy pipeline needs at least one stream per device");
  }
}

const std::vector<CopyStream>& CopyPipeline::streams_for(int device) {
  auto it = streams_.find(device);
  if (it != streams_.end()) return it->second;
  // All lanes of a device or none: a half-made set would change what later
  // operations create, and the engine's accounting with it. If a create
  // fails, the streams made so far are destroyed with `streams`.
  std::vector<CopyStream> streams;
  streams.reserve(options_.streams_per_device);
  while (streams.size() < options_.streams_per_device) {
    streams.push_back(CopyStream::create(driver_, device));
  }
  return streams_.emplace(device, std::move(streams)).first->second;
}

QueuedCopies::~QueuedCopies() {
  if (waited_) return;
  // Nothing handed over may start once the streams are drained.
  for (const HostBuffer* buffer : handed_over_) buffer->stop_preparing();
  for (const auto& [device, lane] : next_lane_) pipeline_.drain_quietly(device);
}

void QueuedCopies::add(const std::vector<CopyItem>& items) {
  waited_ = false;
  for (const CopyItem& item : items) {
    const std::vector<CopyStream>& streams = pipeline_.streams_for(item.device);
    std::size_t& lane = next_lane_[item.device];
    for (std::size_t offset = 0, size = 0; offset < item.size; offset += size) {
      size = std::min(pipeline_.options_.chunk_bytes, item.size - offset);
      std::uint8_t* host = item.host + offset;
      std::size_t in_buffer = 0;
      if (item.buffer != nullptr) {
        in_buffer = static_cast<std::size_t>(host - item.buffer->data());
        size = item.buffer->chunk_extent(in_buffer, size);
      }
      auto start = [&driver = pipeline_.driver_, to_host = to_host_, device = item.device,
                    device_ptr = item.device_ptr + offset, host, size,
                    stream = streams[lane++ % streams.size()].get()] {
        if (to_host) {
          driver.copy_to_host_async(device, host, device_ptr, size, stream);
        } else {
          driver.copy_to_device_async(device, device_ptr, host, size, stream);
        }
      };
      // Only buffers still being prepared take the hand-over, so restores
      // (their buffers are ready) queue as before, with nothing allocated.
      if (item.buffer != nullptr && item.buffer->being_prepared()) {
        // Recorded before the hand-over: a push_back failing after it would
        // leave a copy that the unwinding does not stop, to start after the
        // streams were drained.
        const bool record = handed_over_.empty() || handed_over_.back() != item.buffer;
        if (record) handed_over_.push_back(item.buffer);
        std::function<void()> task = start;
        if (item.buffer->run_when_ready(in_buffer, task)) continue;
        if (record) handed_over_.pop_back();  // nothing handed over: the chunk is ready
      }
      start();
    }
  }
}

void QueuedCopies::wait() {
  for (const HostBuffer* buffer : handed_over_) buffer->wait_prepared();
  handed_over_.clear();
  for (const auto& [device, lane] : next_lane_) {
    for (const CopyStream& stream : pipeline_.streams_.at(device)) {
      pipeline_.driver_.synchronize_stream(device, stream.get());
    }
  }
  waited_ = true;
}

std::vector<LaneMark> QueuedCopies::detach() {
  for (const HostBuffer* buffer : handed_over_) buffer->wait_prepared();
  handed_over_.clear();
  std::vector<LaneMark> marks;
  for (const auto& [device, lane] : next_lane_) {
    for (const CopyStream& stream : pipeline_.streams_.at(device)) {
      CopyEvent event = CopyEvent::create(pipeline_.driver_, device);
      pipeline_.driver_.record_event(device, event.get(), stream.get());
      marks.push_back({device, std::move(event)});
    }
  }
  waited_ = true;  // the marks' owner waits from now on
  return marks;
}

void CopyPipeline::to_host(const std::vector<CopyItem>& items) {
  QueuedCopies copies(*this, /*to_host=*/true);
  copies.add(items);
  copies.wait();
}

void CopyPipeline::start_to_host(int device, std::size_t lane, void* dst, DevicePtr src,
                                 std::size_t size) {
  driver_.copy_to_host_async(device, dst, src, size, stream(device, lane));
}

void CopyPipeline::start_to_device(int device, std::size_t lane, DevicePtr dst, const void* src,
                                   std::size_t size) {
  driver_.copy_to_device_async(device, dst, src, size, stream(device, lane));
}

StreamHandle CopyPipeline::stream(int device, std::size_t lane) {
  const std::vector<CopyStream>& streams = streams_for(device);
  return streams[lane % streams.size()].get();
}

void CopyPipeline::wait(int device, std::size_t lane) {
  driver_.synchronize_stream(device, stream(device, lane));
}

void CopyPipeline::drain_quietly(int device) noexcept {
  auto it = streams_.find(device);
  if (it == streams_.end()) return;
  for (const CopyStream& stream : it->second) {
    try {
      driver_.synchronize_stream(device, stream.get());
    } catch (const std::exception& error) {
      log(LogLevel::kWarning,
          std::string("waiting for copies while unwinding failed: ") + error.what());
    }
  }
}

}  // namespace tms
