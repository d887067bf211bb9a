// Compressed host backups: the pause side (measure, then encode on the
// device and copy the stored bytes to host) and the resume side (copy the
// stored bytes back and decode on the device), in the format of format.h.
//
// Device memory. The kernels need a scratch area on each device: the chunk
// size table of the allocations being paused (4 bytes per 32 KiB) and one
// staging slot per copy lane (a batch at its largest, 32 MiB + 20 KiB). It
// is created for the operation and given back when it ends, so nothing is
// held while paused and an operation never needs more than this fixed
// amount (~64 MiB with the default two lanes) on top of what it maps.
//
// Pipelining. Batch i goes to lane i % lanes and that lane's slot: the
// encode kernel and the copy of its output (or the copy in and the decode
// kernel) are queued on the lane's stream, so a slot is reused only after
// its previous copy, and the kernel of one lane overlaps the copy of the
// other. A pause into fresh host memory hands each batch's encode and copy
// to the thread that registers its host memory, in batch order
// (backup/in_order_hand_over.h), so they overlap the preparation. On failure every lane is drained
// before the exception leaves, and the scratch is given back; host buffers are the caller's (a
// failed pause gives them back, a failed resume leaves them untouched).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "driver/driver.h"
#include "vmm/parking_lot.h"
#include "vmm/vmm_handles.h"

namespace tms {

/// One allocation's contents, compressed or restored as a whole.
struct CompressItem {
  int device = 0;
  DevicePtr device_ptr = 0;
  std::size_t size = 0;  ///< input bytes
};

/// A device scratch area, mapped for the length of one operation.
class DeviceScratch {
 public:
  DeviceScratch(Driver& driver, ParkingLot& parking, int device, std::size_t size);
  [[nodiscard]] DevicePtr base() const { return reservation_.va(); }
  [[nodiscard]] std::size_t size() const { return size_; }

 private:
  std::size_t size_;
  VaReservation reservation_;
  PhysicalMemory physical_;
  Mapping mapping_;
};

/// The pause side: construct (measures every item on its device), ask the
/// host for stored_bytes(i) per item, then write().
class CompressedBackup {
 public:
  /// @throws OutOfMemory (scratch), DriverError.
  CompressedBackup(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                   std::vector<CompressItem> items);

  /// Host bytes that item `i` takes compressed.
  [[nodiscard]] std::size_t stored_bytes(std::size_t i) const;
  /// Encodes every item into `targets[i]` (stored_bytes(i) bytes each);
  /// returns when all copies are complete. @throws DriverError, or what
  /// preparing a target threw; no copy or kernel is in flight then.
  void write(const std::vector<const HostBuffer*>& targets);

 private:
  struct DeviceState {
    std::vector<std::size_t> items;
    std::size_t chunks = 0;  // of all its items
    std::unique_ptr<DeviceScratch> scratch;
  };
  [[nodiscard]] DevicePtr slot(const DeviceState& state, std::size_t lane) const;
  /// Queues the encode of batch `b` of item `i` into its lane's slot and the
  /// copy of its output to [host_offset, host_offset + stored) of `target`,
  /// all of which is registered.
  void encode_batch(int device, const DeviceState& state, std::size_t i, std::size_t b,
                    std::size_t lane, const HostBuffer& target, std::size_t host_offset,
                    std::size_t stored);

  Driver& driver_;
  CopyPipeline& copies_;
  std::vector<CompressItem> items_;
  std::vector<std::size_t> first_chunk_;  // per item: index in its device's size table
  std::vector<std::vector<std::uint64_t>> batch_bytes_;  // per item, per batch: stored bytes
  std::vector<std::uint32_t> chunk_sizes_;               // all devices' tables, device after device
  std::map<int, DeviceState> devices_;
};

/// The resume side: decodes `sources[i]` into item i's memory. @throws
/// DeviceOutOfMemory (no scratch on that device), DriverError,
/// InvalidArgument (a malformed backup); the sources are unchanged either way.
void restore_compressed(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                        const std::vector<CompressItem>& items,
                        const std::vector<const HostBuffer*>& sources);

}  // namespace tms
