#include "backup/backup_method.h"

#include "common/errors.h"

namespace tms {

std::string describe_target(const BackupTarget& target) {
  return "allocation " + hex_address(target.base) + " of " + std::to_string(target.bytes) +
         " bytes (tag '" + target.tag + "', device " + std::to_string(target.device) + ")";
}

}  // namespace tms
