// Owner of one event marking where a lane's copies end (a non-blocking
// resume hands these to the engine, which waits on them later).
//
// Like a stream, an event holds nothing the engine accounts for, and the
// driver frees it with the context, so a failed destroy is logged rather
// than parked for a retry.
#pragma once

#include "common/unique_handle.h"
#include "driver/driver.h"

namespace tms {

/// Deleter: destroys the event, logging a failure (never throws).
struct DestroyEventOrLog {
  Driver* driver = nullptr;
  int device = 0;
  void operator()(EventHandle event) const noexcept;
};

/// An event of one device, recorded on one of its copy lanes.
class CopyEvent : public UniqueHandle<EventHandle, DestroyEventOrLog> {
 public:
  using UniqueHandle::UniqueHandle;

  /// @throws DriverError.
  [[nodiscard]] static CopyEvent create(Driver& driver, int device) {
    return {driver.create_event(device), DestroyEventOrLog{&driver, device}};
  }
};

/// Where the copies queued on one lane of `device` end.
struct LaneMark {
  int device = 0;
  CopyEvent event;
};

}  // namespace tms
