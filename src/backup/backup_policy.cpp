#include "backup/backup_policy.h"

#include <array>
#include <string>

#include "common/errors.h"

namespace tms {
namespace {

#define TMS_BACKUP_KIND_NAME(enumerator, name) std::string_view(name),
constexpr std::array kKindNames = {TMS_BACKUP_KINDS(TMS_BACKUP_KIND_NAME)};
#undef TMS_BACKUP_KIND_NAME
static_assert(kKindNames.size() == static_cast<std::size_t>(BackupKind::kCount));

}  // namespace

std::string_view backup_kind_name(BackupKind kind) {
  return kKindNames.at(static_cast<std::size_t>(kind));
}

BackupKind parse_backup_kind(std::string_view name) {
  for (std::size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == name) return static_cast<BackupKind>(i);
  }
  throw InvalidArgument("unknown backup kind '" + std::string(name) +
                        "'; expected none, host, host_compressed or disk");
}

}  // namespace tms
