// Owner of one copy stream (a lane of the copy pipeline).
//
// Destroying a stream frees nothing the engine accounts for, and the driver
// frees it with the context anyway, so a failed destroy is logged rather than
// parked for a retry.
#pragma once

#include "common/unique_handle.h"
#include "driver/driver.h"

namespace tms {

/// Deleter: destroys the stream, logging a failure (never throws).
struct DestroyStreamOrLog {
  Driver* driver = nullptr;
  int device = 0;
  void operator()(StreamHandle stream) const noexcept;
};

/// A non-blocking stream on one device.
class CopyStream : public UniqueHandle<StreamHandle, DestroyStreamOrLog> {
 public:
  using UniqueHandle::UniqueHandle;

  /// @throws DriverError.
  [[nodiscard]] static CopyStream create(Driver& driver, int device) {
    return {driver.create_stream(device), DestroyStreamOrLog{&driver, device}};
  }
};

}  // namespace tms
