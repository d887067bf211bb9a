// Disk backup: the contents of a paused allocation in a file of the backup
// directory, one file per allocation.
//
// Data path. A file is written and read in blocks of `chunk_bytes`
// (TMS_DISK_BACKUP_CHUNK_MB, 16 MiB by default) at block-aligned offsets,
// through a page-locked staging buffer of one slot per block in flight plus
// one. Pause copies block k device -> host into its slot while up to
// `write_depth` earlier blocks are being written by I/O threads
// (backup/io_threads.h); resume keeps up to `read_depth` blocks being read
// while the block read before them is copied host -> device. Preallocating
// the file (fallocate) lets the filesystem take those writes in parallel
// (ext4 serializes direct writes that extend a file) and reports a full
// disk before anything is written. The staging buffer is sized to the work:
// min(allocation rounded up to 4 KiB, (depth + 1) x chunk_bytes), grown
// when a larger allocation needs it.
//
// Files no one else can open. A backup file is created unnamed (O_TMPFILE)
// in the directory, or, where the filesystem cannot do that, under a
// random name that is unlinked at once. Only the descriptor refers to it,
// kept from pause until resume or free: resume reads exactly the bytes that
// pause wrote (nobody can swap the file for a symlink, a FIFO or other
// data), and the kernel frees the space when the descriptor is closed, so
// no exit of the process (Ctrl-C, SIGTERM, abort, os._exit, SIGKILL) leaves
// a file behind. A checksum of each block (backup/checksum.h), computed by
// the thread that wrote it, is checked by the thread that reads it back, so
// damage is an error, never wrong contents.
//
// No page cache. Files are opened with O_DIRECT when the filesystem allows
// it, so a backup does not turn into cached host memory that nobody reads
// again; every transfer is then a multiple of 4 KiB at a 4 KiB aligned
// offset from a page-aligned buffer, as O_DIRECT requires, and a file holds
// the allocation's bytes rounded up to 4 KiB. Where open() refuses O_DIRECT
// (tmpfs before Linux 6.6, some network and FUSE filesystems) the same
// transfers go through the cache, and each written block is written back
// (sync_file_range) and dropped (POSIX_FADV_DONTNEED), each read block
// dropped after it is read: dirty pages cannot be dropped, so the write-back
// comes first. Where open() takes O_DIRECT but the first direct pwrite or
// pread is refused with EINVAL (some FUSE and network filesystems, older
// tmpfs variants), the flag is cleared on the descriptor, once per file
// whichever I/O thread is refused first, and the transfer and every later
// one of that file go through the cache under the same rules; blocks
// written directly before stay valid (backup/transfer_mode.h). If clearing
// it fails, the pause or resume fails as any refused transfer would.
//
// Closing off the resume's path. Closing the last descriptor of an unnamed
// file is when the filesystem frees its blocks, which can be slow (ext4
// mounted with `discard` can take a sizeable fraction of the read itself).
// Once a resume has committed, the file is no one's data any more, so its
// descriptor goes to a closing thread (close_later) and resume returns; the
// space comes back moments later. A save that fails while some are still closing (no descriptor
// left, no space) waits for those closes and tries once more;
// wait_closed() waits for them too.
//
// No fsync. Backups are scratch data that never outlive the process, so
// nothing is gained by forcing them to stable storage; reading back through
// the same kernel is always consistent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backup/copy_pipeline.h"
#include "backup/host_memory.h"
#include "backup/ordered_worker.h"
#include "driver/driver.h"
#include "io/disk_file.h"
#include "io/file_io.h"

namespace tms {

/// Defaults (docs/disk-backup.md): a transfer large enough that per-call
/// costs vanish but small enough to keep several in flight, and enough in
/// flight that the disk always has the next transfer queued while a block's
/// device copy runs.
struct DiskBackupOptions {
  std::size_t chunk_bytes = std::size_t{16} << 20;  ///< each transfer; rounded up to 4 KiB
  std::size_t write_depth = 8;                      ///< writes in flight per file
  std::size_t read_depth = 8;                       ///< reads in flight per file
  bool direct_io = true;                            ///< try O_DIRECT first
};

class DiskBackupIo {
 public:
  /// @throws InvalidArgument for a depth of 0.
  DiskBackupIo(HostMemory& host, FileIo& io, CopyPipeline& copies, DiskBackupOptions options);
  DiskBackupIo(const DiskBackupIo&) = delete;
  DiskBackupIo& operator=(const DiskBackupIo&) = delete;

  /// Creates `dir` if missing (mode 0700) and checks that it is a safe,
  /// writable directory (backup/backup_directory.h).
  /// @returns its absolute path. @throws InvalidArgument, IoError.
  [[nodiscard]] std::string prepare_directory(const std::string& dir) const;
  /// Checks that `dir` is (still) a safe, writable directory.
  /// @throws IoError saying what is wrong.
  void check_directory(const std::string& dir) const;

  /// Writes [src, src+size) of `device` to a new file in `dir`.
  /// @throws IoError (with the directory and errno text; ENOSPC and the
  /// file size limit say so), DriverError, OutOfMemory (staging memory).
  /// No file remains then, and no transfer is still running.
  DiskFile save(const std::string& dir, int device, DevicePtr src, std::size_t size);
  /// Reads `file` back into [dst, dst+size) of `device` and checks it
  /// against the checksum taken while writing.
  /// @throws IoError (also when the file was changed), DriverError; the
  /// file's contents are untouched then (its descriptor may have switched
  /// to buffered I/O), and no transfer is still running.
  void load(const DiskFile& file, int device, DevicePtr dst, std::size_t size);

  /// Gives a backup file back without waiting for the filesystem to free
  /// its blocks: its descriptor is closed on the closing thread. (Files
  /// have no name by then: the engine splits names off after save, see
  /// take_name; one left would be unlinked here, as the destructor does.)
  void close_later(DiskFile file) noexcept;
  /// Waits until every descriptor handed to close_later has been closed.
  void wait_closed() noexcept { closer_.wait_idle(); }

  /// Gives the staging buffer back (it is made again on next use).
  void release_staging() { staging_.reset(); }

 private:
  /// Staging for an allocation of `size` bytes: at least min(size rounded
  /// up to 4 KiB, slots() x chunk_bytes); grown (never shrunk) as needed.
  std::uint8_t* staging(std::size_t size);
  /// Staging slots: one per transfer in flight, plus one for the block
  /// being copied to or from the device.
  [[nodiscard]] std::size_t slots() const;
  /// Queues the copy of `size` bytes between `staging_offset` of the
  /// staging buffer and `device_ptr` on `lane`, one piece per registered
  /// chunk.
  void start_copy(bool to_host, int device, std::size_t lane, std::size_t staging_offset,
                  DevicePtr device_ptr, std::size_t size);
  /// A new file no one else can open in the directory `dir_fd`.
  DiskFile create_file(int dir_fd, const std::string& dir);
  /// save() without the second try. Same guarantees.
  DiskFile save_once(const std::string& dir, int device, DevicePtr src, std::size_t size);
  /// open() with O_DIRECT when allowed, else without; -1 and errno set.
  /// `direct` says which.
  int open_direct_if_possible(int dir_fd, const char* path, int flags, bool& direct);

  HostMemory& host_;
  FileIo& io_;
  CopyPipeline& copies_;
  std::size_t chunk_bytes_;
  std::size_t write_depth_;
  std::size_t read_depth_;
  bool direct_io_;
  HostBuffer staging_;
  // Last: its thread closes through io_, and goes (after the closes queued)
  // before the rest.
  OrderedWorker<int> closer_;
};

}  // namespace tms
