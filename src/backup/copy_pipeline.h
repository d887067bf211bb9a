// Moves allocation contents between device and host for backups: the one
// place that decides streams, chunking and ordering of the copies.
//
// Each device gets `streams_per_device` non-blocking streams ("lanes"),
// created together on first use. An item larger than `chunk_bytes` is cut
// into chunks, and consecutive chunks (of one item or of many small items)
// go to the lanes in turn, so several copies are in flight per device and
// copies of different devices overlap. A copy never spans two registered
// chunks of a host buffer. A copy into a chunk still being prepared is
// handed to the thread preparing it, which queues it as soon as the chunk is
// registered (HostBuffer::run_when_ready: queued from any other thread, it
// would wait behind the driver's registration lock), so copies overlap the
// preparation of fresh host memory and the caller does not wait chunk by
// chunk. A batch returns when every lane it used has drained.
//
// On failure every copy already queued is waited for (errors ignored) before
// the exception leaves, so the caller may free or reuse the host memory at
// once. QueuedCopies queues in several steps and waits once, for callers
// that work between the steps (resume maps the next batch of allocations
// while the copies of the previous one run).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "backup/copy_event.h"
#include "backup/copy_stream.h"
#include "backup/host_memory.h"
#include "driver/driver.h"

namespace tms {

/// One contiguous copy between an allocation and its host backup.
struct CopyItem {
  int device = 0;
  DevicePtr device_ptr = 0;
  std::uint8_t* host = nullptr;
  std::size_t size = 0;
  /// The buffer `host` points into, if any: copies follow its registered
  /// chunks and wait for them to be ready.
  const HostBuffer* buffer = nullptr;
};

struct CopyPipelineOptions {
  std::size_t chunk_bytes = std::size_t{64} << 20;
  std::size_t streams_per_device = 2;
};

class QueuedCopies;

class CopyPipeline {
 public:
  explicit CopyPipeline(Driver& driver, CopyPipelineOptions options = {});
  CopyPipeline(const CopyPipeline&) = delete;
  CopyPipeline& operator=(const CopyPipeline&) = delete;
  // Destroying it destroys the streams it created (CopyStream logs errors).

  [[nodiscard]] const CopyPipelineOptions& options() const { return options_; }

  /// Copies every item device -> host; returns when all are complete.
  /// @throws DriverError, or what preparing a buffer threw; the host side is
  /// then partially written and no copy is in flight.
  void to_host(const std::vector<CopyItem>& items);

  // --- single copies on one lane, for callers that pipeline themselves ----
  // (disk backup). `lane` is taken modulo streams_per_device.
  void start_to_host(int device, std::size_t lane, void* dst, DevicePtr src, std::size_t size);
  void start_to_device(int device, std::size_t lane, DevicePtr dst, const void* src,
                       std::size_t size);
  /// The stream of `lane`, for callers that queue kernels between copies
  /// (compressed backups).
  StreamHandle stream(int device, std::size_t lane);
  /// Waits for the copies queued on `lane`. @throws DriverError.
  void wait(int device, std::size_t lane);
  /// Waits for every lane of `device`, ignoring errors (for unwinding).
  void drain_quietly(int device) noexcept;

 private:
  friend class QueuedCopies;
  const std::vector<CopyStream>& streams_for(int device);

  Driver& driver_;
  CopyPipelineOptions options_;
  std::map<int, std::vector<CopyStream>> streams_;
};

/// Copies in one direction, queued in several steps on the pipeline's
/// lanes (chunks go to the lanes in turn across steps) and waited for once.
/// Destroyed before wait() returned (an exception), it stops the
/// preparation of the buffers it handed copies to (their batch's wait_all
/// throws then), so nothing handed over starts after, and waits for every
/// copy queued, ignoring errors, so the memory on both sides may be freed
/// then.
class QueuedCopies {
 public:
  QueuedCopies(CopyPipeline& pipeline, bool to_host) : pipeline_(pipeline), to_host_(to_host) {}
  QueuedCopies(const QueuedCopies&) = delete;
  QueuedCopies& operator=(const QueuedCopies&) = delete;
  ~QueuedCopies();

  /// Queues every item (copies into chunks still being prepared are handed
  /// to their preparation). @throws DriverError, or what preparing a buffer
  /// threw; what was queued before stays queued.
  void add(const std::vector<CopyItem>& items);
  /// Returns when every copy queued or handed over is complete.
  /// @throws DriverError, or what preparing a buffer threw; no copy is in
  /// flight then.
  void wait();
  /// Lets the copies run on without waiting for them: marks the end of
  /// every lane of every device used with an event and returns the marks.
  /// The caller waits on them (Driver::synchronize_event) before it frees
  /// or reuses either side of any copy. Waits for the preparation of the
  /// buffers handed copies first (resume's buffers are ready: none).
  /// @throws DriverError, or what preparing a buffer threw; the copies stay
  /// with this object then (its destructor waits for them).
  std::vector<LaneMark> detach();

 private:
  CopyPipeline& pipeline_;
  bool to_host_;
  std::map<int, std::size_t> next_lane_;  // per device used
  // Buffers whose preparation was handed copies (recorded before the
  // hand-over): waited for before the lanes, stopped before draining them
  // when unwinding.
  std::vector<const HostBuffer*> handed_over_;
  bool waited_ = false;
};

}  // namespace tms
