// What happens to an allocation's contents while it is paused: the one value
// that travels from a region (Python, the C ABI, TMS_INIT_* defaults) to the
// allocation record and picks the BackupMethod that pause and resume use.
#pragma once

#include <cstdint>
#include <string_view>

#include "backup/host_memory_kind.h"

namespace tms {

/// Each backup kind, written once as (enumerator, name): BackupKind,
/// backup_kind_name() and parse_backup_kind() are made from this list. A new
/// kind is one more line here and one BackupMethod (backup/backup_methods.h).
#define TMS_BACKUP_KINDS(X)                                                  \
  X(kNone, "none")                      /* contents discarded on pause */    \
  X(kHost, "host")                      /* a plain copy in host memory */    \
  X(kHostCompressed, "host_compressed") /* compressed on the device first */ \
  X(kDisk, "disk")                      /* a file in the backup directory */

#define TMS_BACKUP_KIND_ENUMERATOR(enumerator, name) enumerator,
enum class BackupKind : std::uint8_t { TMS_BACKUP_KINDS(TMS_BACKUP_KIND_ENUMERATOR) kCount };
#undef TMS_BACKUP_KIND_ENUMERATOR

std::string_view backup_kind_name(BackupKind kind);
/// @throws InvalidArgument for a name that is not in the list.
BackupKind parse_backup_kind(std::string_view name);

/// "pinned" | "mmap".
const char* host_memory_kind_name(HostMemoryKind kind);
/// Either name, in any case. @throws InvalidArgument naming the accepted ones.
HostMemoryKind parse_host_memory_kind(std::string_view name);

/// Whether backups of `kind` live in host memory (and so have a host memory kind).
constexpr bool keeps_host_copy(BackupKind kind) {
  return kind == BackupKind::kHost || kind == BackupKind::kHostCompressed;
}

struct BackupPolicy {
  BackupKind kind = BackupKind::kNone;
  /// Where a host backup lives; meaningless (and kept at its default) for
  /// the kinds that keep no host copy.
  HostMemoryKind host_memory = HostMemoryKind::kPinned;

  bool operator==(const BackupPolicy&) const = default;
};

}  // namespace tms
