#include "backup/copy_stream.h"

#include <exception>
#include <string>

#include "common/log.h"

namespace tms {

void DestroyStreamOrLog::operator()(StreamHandle stream) const noexcept {
  try {
    driver->destroy_stream(device, stream);
  } catch (const std::exception& error) {
    log(LogLevel::kWarning, std::string("could not destroy a copy stream: ") + error.what());
  }
}

}  // namespace tms
