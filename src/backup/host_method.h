// Plain host backups (BackupKind::kHost): the contents copied into host
// memory as they are. The only kind that can be retained after resume and
// read in place (get_cpu_backup), so its buffer is shared with the leases of
// readers: it goes back to HostMemory when the last of them lets go.
#pragma once

#include <memory>
#include <vector>

#include "backup/backup_method.h"
#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"

namespace tms {

class HostBackup final : public Backup {
 public:
  explicit HostBackup(HostBuffer buffer)
      : buffer_(std::make_shared<HostBuffer>(std::move(buffer))) {}

  [[nodiscard]] std::size_t host_bytes() const override { return buffer_ ? buffer_->size() : 0; }
  [[nodiscard]] std::shared_ptr<const HostBuffer> host_copy() const override { return buffer_; }
  [[nodiscard]] bool retainable() const override { return true; }
  /// Callers serialize this with taking leases (the engine's mutex), so a
  /// buffer nobody leases is given back with the batch, and a leased one
  /// by its last lease.
  void release_into(Released& released) noexcept override;

 private:
  std::shared_ptr<HostBuffer> buffer_;
};

class HostMethod final : public BackupMethod {
 public:
  HostMethod(HostMemory& host, CopyPipeline& copies) : host_(host), copies_(copies) {}

  /// New host memory comes in one batch (pooled first, then fresh blocks
  /// registered while the copies run); a retained backup is refreshed in
  /// place, so it keeps its host address from cycle to cycle.
  std::vector<std::unique_ptr<Backup>> save(const std::vector<BackupTarget>& targets) override;
  // restore: nothing left to do; host_copy() is copied back as memory is mapped.

 private:
  HostMemory& host_;
  CopyPipeline& copies_;
};

/// One request per target, grouped by tag so that no host block spans two
/// tags (pausing one tag must not keep another's block alive).
std::vector<HostRequest> host_requests(const std::vector<BackupTarget>& targets,
                                       const std::vector<std::size_t>& sizes);

}  // namespace tms
