#include "backup/backup_methods.h"

namespace tms {

BackupMethods::BackupMethods(Driver& driver, ParkingLot& parking, HostMemory& host,
                             CopyPipeline& copies, DiskBackupIo& disk)
    : host_(host, copies), compressed_(driver, parking, host, copies), disk_(disk, parking) {
  by_kind_[static_cast<std::size_t>(BackupKind::kHost)] = &host_;
  by_kind_[static_cast<std::size_t>(BackupKind::kHostCompressed)] = &compressed_;
  by_kind_[static_cast<std::size_t>(BackupKind::kDisk)] = &disk_;
}

}  // namespace tms
