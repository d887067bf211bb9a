#include "backup/copy_event.h"

#include <exception>
#include <string>

#include "common/log.h"

namespace tms {

void DestroyEventOrLog::operator()(EventHandle event) const noexcept {
  try {
    driver->destroy_event(device, event);
  } catch (const std::exception& error) {
    log(LogLevel::kWarning, std::string("could not destroy a copy event: ") + error.what());
  }
}

}  // namespace tms
