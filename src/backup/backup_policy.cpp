#include "backup/backup_policy.h"

#include <algorithm>
#include <array>
#include <cctype>
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

const char* host_memory_kind_name(HostMemoryKind kind) {
  return kind == HostMemoryKind::kPinned ? "pinned" : "mmap";
}

HostMemoryKind parse_host_memory_kind(std::string_view name) {
  std::string value(name);
  std::transform(value.begin(), value.end(), value.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (value == "pinned") return HostMemoryKind::kPinned;
  if (value == "mmap") return HostMemoryKind::kMmap;
  throw InvalidArgument("unknown CPU backup backend '" + std::string(name) +
                        "'; accepted: pinned, mmap");
}

}  // namespace tms
