#include "capi/region_policy.h"

#include <string>

#include "common/errors.h"

namespace tms {
namespace {

constexpr const char* kCpuAndDisk =
    "CPU and disk backup together are refused: a paused allocation keeps one backup; turn one "
    "off first";

}  // namespace

BackupPolicy policy_from_c(const tms_backup_policy& policy, HostMemoryKind default_host) {
  if (policy.kind < 0 || policy.kind >= static_cast<int>(BackupKind::kCount)) {
    throw InvalidArgument("unknown backup kind " + std::to_string(policy.kind) +
                          "; expected a tms_backup_kind (0 to " +
                          std::to_string(static_cast<int>(BackupKind::kCount) - 1) + ")");
  }
  BackupPolicy result;
  result.kind = static_cast<BackupKind>(policy.kind);
  switch (policy.host_memory) {
    case TMS_HOST_MEMORY_DEFAULT:
      if (keeps_host_copy(result.kind)) result.host_memory = default_host;
      return result;
    case TMS_HOST_MEMORY_PINNED:
    case TMS_HOST_MEMORY_MMAP:
      if (!keeps_host_copy(result.kind)) {
        throw InvalidArgument("a host memory kind was given for backup kind '" +
                              std::string(backup_kind_name(result.kind)) +
                              "', which keeps no host copy; pass TMS_HOST_MEMORY_DEFAULT");
      }
      result.host_memory = policy.host_memory == TMS_HOST_MEMORY_PINNED ? HostMemoryKind::kPinned
                                                                        : HostMemoryKind::kMmap;
      return result;
    default:
      throw InvalidArgument("unknown host memory kind " + std::to_string(policy.host_memory) +
                            "; expected a tms_host_memory (0 to 2)");
  }
}

tms_backup_policy policy_to_c(const BackupPolicy& policy) {
  tms_backup_policy result{static_cast<std::int32_t>(policy.kind), TMS_HOST_MEMORY_DEFAULT};
  if (keeps_host_copy(policy.kind)) {
    result.host_memory = policy.host_memory == HostMemoryKind::kPinned ? TMS_HOST_MEMORY_PINNED
                                                                       : TMS_HOST_MEMORY_MMAP;
  }
  return result;
}

BackupPolicy with_cpu_backup(BackupPolicy policy, bool enable, HostMemoryKind default_host) {
  if (!enable) return keeps_host_copy(policy.kind) ? BackupPolicy{} : policy;
  if (policy.kind == BackupKind::kDisk) throw InvalidArgument(kCpuAndDisk);
  if (policy.kind == BackupKind::kNone) return {BackupKind::kHost, default_host};
  return policy;
}

BackupPolicy with_host_memory(BackupPolicy policy, HostMemoryKind host_memory) {
  if (!keeps_host_copy(policy.kind)) {
    throw InvalidArgument(
        "a CPU backup backend without a CPU backup means nothing; enable the CPU backup first");
  }
  policy.host_memory = host_memory;
  return policy;
}

BackupPolicy with_disk_backup(BackupPolicy policy, bool enable) {
  if (!enable) return policy.kind == BackupKind::kDisk ? BackupPolicy{} : policy;
  if (keeps_host_copy(policy.kind)) throw InvalidArgument(kCpuAndDisk);
  return {BackupKind::kDisk, HostMemoryKind::kPinned};
}

BackupPolicy with_compress(BackupPolicy policy, bool enable) {
  if (!enable) {
    if (policy.kind == BackupKind::kHostCompressed) policy.kind = BackupKind::kHost;
    return policy;
  }
  if (!keeps_host_copy(policy.kind)) {
    throw InvalidArgument(
        "compression applies to the CPU backup; enable the CPU backup before compressing it");
  }
  policy.kind = BackupKind::kHostCompressed;
  return policy;
}

}  // namespace tms
