// The driver seam: the few device-memory operations the engine needs.
//
// The engine never talks to CUDA directly. It takes a Driver&, so tests run
// it on SimDriver (host memory standing in for device memory) and the
// process-wide instance runs it on CudaDriver (libcuda loaded at run time).
// Every method reports failure by throwing a tms::Error subclass
// (OutOfMemory for a failed physical or host allocation, DriverError for
// anything else); none of them terminates the process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tms {

/// A device virtual address.
using DevicePtr = std::uintptr_t;

/// Opaque handle of a physical allocation (CUmemGenericAllocationHandle).
using PhysicalHandle = std::uint64_t;

/// Opaque stream handle (CUstream); nullptr is the legacy default stream.
using StreamHandle = void*;

/// Opaque event handle (CUevent): a mark in a stream's work.
using EventHandle = void*;

struct DeviceMemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

class Driver {
 public:
  Driver() = default;
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;
  virtual ~Driver() = default;

  /// Short name for logs and messages ("cuda", "sim").
  [[nodiscard]] virtual std::string_view name() const = 0;

  // --- devices -----------------------------------------------------------
  virtual int device_count() = 0;
  /// The device the calling thread works on (the runtime's current device).
  virtual int current_device() = 0;
  /// Physical allocations and mappings are multiples of this on `device`.
  virtual std::size_t granularity(int device) = 0;
  virtual DeviceMemoryInfo memory_info(int device) = 0;
  /// Waits for all outstanding work on `device`.
  virtual void synchronize(int device) = 0;
  /// Whether a stream capture that a pause or resume on `device` would
  /// invalidate is under way, as far as the driver can tell without
  /// disturbing it: a capture on a blocking stream of the device (the legacy
  /// stream reports it). Captures on non-blocking streams of other threads
  /// are invisible here.
  virtual bool capture_underway(int device) = 0;

  // --- virtual address space ----------------------------------------------
  /// Reserves `size` bytes of device VA (size is a granularity multiple).
  virtual DevicePtr reserve(std::size_t size, std::size_t alignment) = 0;
  virtual void free_reservation(DevicePtr va, std::size_t size) = 0;

  // --- physical memory ----------------------------------------------------
  /// Creates `size` bytes of physical memory on `device`. Throws OutOfMemory.
  virtual PhysicalHandle create_physical(int device, std::size_t size) = 0;
  virtual void release_physical(PhysicalHandle handle) = 0;
  virtual void map(DevicePtr va, std::size_t size, PhysicalHandle handle) = 0;
  virtual void unmap(DevicePtr va, std::size_t size) = 0;
  /// Grants `device` read/write access to a mapped range.
  virtual void set_access(DevicePtr va, std::size_t size, int device) = 0;

  // --- host memory for backups ----------------------------------------------
  /// Allocates `size` bytes of anonymous host memory, readable and writable,
  /// for backups (page-locked later, in chunks, through host_register).
  /// Throws OutOfMemory.
  virtual void* host_alloc(std::size_t size) = 0;
  /// Gives host memory back: all of an allocation, or a page-aligned piece
  /// of one, as munmap allows (HostMemory frees a block chunk by chunk as
  /// each chunk is unregistered).
  virtual void host_free(void* ptr, std::size_t size) = 0;
  /// Page-locks existing host memory so copies to/from it run at full speed.
  virtual void host_register(void* ptr, std::size_t size) = 0;
  virtual void host_unregister(void* ptr) = 0;

  // --- copies ---------------------------------------------------------------
  /// A non-blocking stream on `device` for backup/restore copies.
  virtual StreamHandle create_stream(int device) = 0;
  virtual void destroy_stream(int device, StreamHandle stream) = 0;
  virtual void copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                                  StreamHandle stream) = 0;
  virtual void copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                                    StreamHandle stream) = 0;
  virtual void synchronize_stream(int device, StreamHandle stream) = 0;

  // --- ordering without a host wait (non-blocking resume) -------------------
  /// An event of `device` without timing.
  virtual EventHandle create_event(int device) = 0;
  virtual void destroy_event(int device, EventHandle event) = 0;
  /// Marks the work queued on `stream` so far.
  virtual void record_event(int device, EventHandle event, StreamHandle stream) = 0;
  /// Blocks until the marked work is done. @throws DriverError, also for a
  /// failure of that work (a copy that failed after it was queued).
  virtual void synchronize_event(int device, EventHandle event) = 0;
  /// Makes the work queued on `stream` from now on wait for the marked work
  /// of `event` (of `device`), without a host wait. `stream` is the
  /// caller's: it may belong to another device, and nullptr is the legacy
  /// stream of the calling thread's current context.
  virtual void stream_wait_event(int device, StreamHandle stream, EventHandle event) = 0;

  // --- compressed backups (the format of codec/format.h) --------------------
  /// Gets the kernels below ready on `device` (loading them takes a large
  /// part of a second the first time), so that the first compressed pause
  /// does not pay for it. Later calls return at once. None needed: no-op.
  virtual void codec_prepare(int device) { (void)device; }
  // Kernels queued on `stream`; all pointers are device memory of `device`.
  /// Stored size of every chunk of [src, src + size) into the u32 array `sizes`.
  virtual void codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                                   StreamHandle stream) = 0;
  /// Encodes one batch (size <= codec::kBatchBytes) into `dst`; `sizes` holds
  /// its chunks' sizes from codec_measure_async.
  virtual void codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                                  DevicePtr dst, StreamHandle stream) = 0;
  /// Decodes one stored batch at `stored` into `size` bytes at `dst`.
  virtual void codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                                  StreamHandle stream) = 0;
};

}  // namespace tms
