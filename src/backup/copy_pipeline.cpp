#include "backup/copy_pipeline.h"

#include <exception>
#include <set>
#include <string>

#include "common/log.h"

namespace tms {

CopyPipeline::~CopyPipeline() {
  for (auto& [device, stream] : streams_) {
    try {
      driver_.destroy_stream(device, stream);
    } catch (const std::exception& error) {
      log(LogLevel::kWarning, std::string("could not destroy a copy stream: ") + error.what());
    }
  }
}

StreamHandle CopyPipeline::stream_for(int device) {
  auto it = streams_.find(device);
  if (it != streams_.end()) return it->second;
  StreamHandle stream = driver_.create_stream(device);
  streams_.emplace(device, stream);
  return stream;
}

void CopyPipeline::to_host(const std::vector<CopyItem>& items) {
  // Queue everything first, then wait once per device, so copies of
  // different devices overlap.
  std::set<int> devices;
  for (const CopyItem& item : items) {
    driver_.copy_to_host_async(item.device, item.host, item.device_ptr, item.size,
                               stream_for(item.device));
    devices.insert(item.device);
  }
  for (int device : devices) driver_.synchronize_stream(device, stream_for(device));
}

void CopyPipeline::to_device(const std::vector<CopyItem>& items) {
  std::set<int> devices;
  for (const CopyItem& item : items) {
    driver_.copy_to_device_async(item.device, item.device_ptr, item.host, item.size,
                                 stream_for(item.device));
    devices.insert(item.device);
  }
  for (int device : devices) driver_.synchronize_stream(device, stream_for(device));
}

}  // namespace tms
