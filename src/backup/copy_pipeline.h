// Moves allocation contents between device and host for backups: the one
// place that decides streams, chunking and ordering of the copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "driver/driver.h"

namespace tms {

/// One contiguous copy between an allocation and its host backup.
struct CopyItem {
  int device = 0;
  DevicePtr device_ptr = 0;
  std::uint8_t* host = nullptr;
  std::size_t size = 0;
};

class CopyPipeline {
 public:
  explicit CopyPipeline(Driver& driver) : driver_(driver) {}
  CopyPipeline(const CopyPipeline&) = delete;
  CopyPipeline& operator=(const CopyPipeline&) = delete;
  /// Destroys the streams it created (errors are logged).
  ~CopyPipeline();

  /// Copies every item device -> host; returns when all are complete.
  /// @throws DriverError; the host side is then partially written.
  void to_host(const std::vector<CopyItem>& items);
  /// Copies every item host -> device; returns when all are complete.
  void to_device(const std::vector<CopyItem>& items);

 private:
  StreamHandle stream_for(int device);

  Driver& driver_;
  std::map<int, StreamHandle> streams_;  // one per device, created on first use
};

}  // namespace tms
