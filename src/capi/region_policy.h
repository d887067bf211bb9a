// The backup policy as the C ABI carries it (tms_backup_policy) and as the
// library it replaces sets it, one field at a time. Every way in refuses a
// policy that means nothing, so the engine only ever sees BackupPolicy values
// that do.
#pragma once

#include "backup/backup_policy.h"
#include "torch_memory_saver/tms.h"

namespace tms {

/// @throws InvalidArgument for unknown values and for a host memory kind
/// with a kind that keeps no host copy. TMS_HOST_MEMORY_DEFAULT becomes
/// `default_host`.
BackupPolicy policy_from_c(const tms_backup_policy& policy, HostMemoryKind default_host);
/// The host memory of the kinds without a host copy reads as DEFAULT.
tms_backup_policy policy_to_c(const BackupPolicy& policy);

// The per-field setters of tms.h. @throws InvalidArgument for the changes it
// lists as refused.
BackupPolicy with_cpu_backup(BackupPolicy policy, bool enable, HostMemoryKind default_host);
BackupPolicy with_host_memory(BackupPolicy policy, HostMemoryKind host_memory);
BackupPolicy with_disk_backup(BackupPolicy policy, bool enable);
BackupPolicy with_compress(BackupPolicy policy, bool enable);

}  // namespace tms
