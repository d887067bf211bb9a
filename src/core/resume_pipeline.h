// The first half of a resume: physical memory created and mapped for every
// allocation being resumed, batch after batch, while the restore copies of
// the batches already mapped run. Creating and mapping batch k+1 on this
// thread overlaps the copy engine's restore of batch k, so a resume of many
// allocations costs about the larger of the two rather than their sum.
//
// All or nothing: the engine commits only after map_and_restore() and
// wait_restores() returned, that is once every allocation has its memory
// mapped and its plain host backup copied back, and no backup has been given
// back. Until commit(), the pipeline owns what it created: unwind() (or its
// destructor, during an exception) first waits for every copy it queued,
// then unmaps and releases everything, leaving the backups untouched.
//
// Backups without a plain host copy are restored by their BackupMethod after
// wait_restores(), into memory this pipeline mapped.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "driver/driver.h"
#include "vmm/parking_lot.h"
#include "vmm/vmm_handles.h"

namespace tms {

struct ResumePipelineOptions {
  /// A batch ends once it holds this many bytes or this many allocations
  /// (at least one allocation, so 0 means one each): small enough that the
  /// copies start early, large enough that each batch's copies outlast the
  /// next batch's create and map calls.
  std::size_t batch_bytes = std::size_t{256} << 20;
  std::size_t batch_allocations = 64;
};

class ResumePipeline {
 public:
  /// One allocation to bring back.
  struct Item {
    int device = 0;
    DevicePtr base = 0;
    std::size_t size = 0;  ///< mapped size (a granularity multiple)
    /// Plain host copy to copy back into [base, base + restore_bytes)
    /// (Backup::host_copy); nullptr for none (other kinds restore later).
    const HostBuffer* backup = nullptr;
    std::size_t restore_bytes = 0;
  };

  ResumePipeline(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                 ResumePipelineOptions options);
  ResumePipeline(const ResumePipeline&) = delete;
  ResumePipeline& operator=(const ResumePipeline&) = delete;
  ~ResumePipeline() { unwind(); }

  /// Creates and maps the memory of every item, batch by batch, queuing
  /// each batch's restore copies as soon as it is mapped. @throws
  /// DeviceOutOfMemory (naming the device whose memory ran out),
  /// DriverError; what was done stays owned by the pipeline (unwind gives
  /// it back).
  void map_and_restore(const std::vector<Item>& items);
  /// Waits for every restore copy queued. @throws DriverError.
  void wait_restores();
  /// Instead of wait_restores, for a non-blocking resume: lets the restore
  /// copies run on and returns marks of where they end (QueuedCopies::detach).
  /// Call it last before the commits: once detached, nothing may unwind
  /// (the memory would be unmapped under the copies). @throws DriverError;
  /// the copies are still the pipeline's then.
  std::vector<LaneMark> detach_restores();

  /// Waits for the copies queued, then unmaps and releases everything not
  /// yet committed (failures are parked).
  void unwind() noexcept;
  /// Hands item `i`'s physical memory and mapping over to the caller.
  PhysicalHandle commit(std::size_t i) noexcept;

 private:
  Driver& driver_;
  ParkingLot& parking_;
  ResumePipelineOptions options_;
  std::vector<PhysicalMemory> physical_;
  std::vector<Mapping> mappings_;
  std::optional<QueuedCopies> restores_;  // last: its copies drain before the unmapping
};

}  // namespace tms
