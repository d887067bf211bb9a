// Compressed host backups (BackupKind::kHostCompressed): the contents are
// compressed on the device (backup/compressed_copies.h) and only the
// stored bytes go to host memory. Their size follows the contents, so they
// are never retained and never read in place: they have no host_copy().
#pragma once

#include <memory>
#include <vector>

#include "backup/backup_method.h"
#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "driver/driver.h"
#include "vmm/parking_lot.h"

namespace tms {

class CompressedHostBackup final : public Backup {
 public:
  explicit CompressedHostBackup(HostBuffer stored) : stored_(std::move(stored)) {}

  [[nodiscard]] std::size_t host_bytes() const override { return stored_.size(); }
  void release_into(Released& released) noexcept override {
    if (!stored_.empty()) released.host.push_back(std::move(stored_));
  }
  [[nodiscard]] const HostBuffer& stored() const { return stored_; }

 private:
  HostBuffer stored_;
};

class CompressedMethod final : public BackupMethod {
 public:
  CompressedMethod(Driver& driver, ParkingLot& parking, HostMemory& host, CopyPipeline& copies)
      : driver_(driver), parking_(parking), host_(host), copies_(copies) {}

  /// Loads the codec kernels on `device` (once), so the first compressed
  /// pause does not wait for that. Best effort: where loading fails now
  /// (inside a graph capture, say), the first pause loads them, and fails
  /// then if it still cannot. Never throws.
  void prepare_allocation(int device) override;
  /// Measures every target on its device first (the host memory to ask
  /// for is what the codec will store), then encodes into it. The device
  /// scratch is given back before this returns, so before the unmap.
  std::vector<std::unique_ptr<Backup>> save(const std::vector<BackupTarget>& targets) override;
  /// Decodes every backup into its target. @throws DeviceOutOfMemory when a
  /// device has no room for the decoding scratch.
  void restore(const std::vector<BackupTarget>& targets) override;

 private:
  Driver& driver_;
  ParkingLot& parking_;
  HostMemory& host_;
  CopyPipeline& copies_;
};

}  // namespace tms
