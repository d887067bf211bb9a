/*
 * torch_memory_saver C ABI.
 *
 * The contract between the engine (libtorch_memory_saver.so) and its users:
 * the Python package (through ctypes), torch's pluggable allocator, the
 * LD_PRELOAD interposers and plain C/C++ programs (see examples/).
 *
 * Conventions
 *  - Every function returning `int` returns a tms_status: TMS_OK (0) on
 *    success, another value on failure. On failure tms_last_error() returns
 *    a message for the calling thread; it stays valid until the thread's next
 *    call into the library.
 *  - No function aborts or exits the process. Exceptions never cross this
 *    boundary.
 *  - Region settings (enabled, tag, backup policy) are per thread: a thread
 *    starts with the process defaults taken from the TMS_INIT_* environment
 *    variables and its changes are invisible to other threads.
 *  - A `tag` of NULL in tms_pause/tms_resume means "every tag". Tags must be
 *    UTF-8 (else TMS_ERROR_INVALID_ARGUMENT): they come back as text.
 *  - Calls are safe while the calling thread exits (e.g. from a pthread-key
 *    destructor, as CUDA runtimes free memory): the thread's settings and
 *    message live until the library's own key destructor runs; a call after
 *    that sees the process defaults.
 *  - In a fork()ed child of a process that had used the library every call
 *    but the log sink's (tms_set_log_callback, tms_flush_log) fails with
 *    TMS_ERROR_INVALID_STATE, decided from an atomic before taking any lock
 *    or allocating anything (no hang whatever the parent's other threads held
 *    at the fork); tms_last_error() then names fork().
 *  - The engine is created on first use; TMS_DRIVER=sim selects the host
 *    simulation, anything else (or unset) the CUDA driver.
 */
#ifndef TORCH_MEMORY_SAVER_TMS_H_
#define TORCH_MEMORY_SAVER_TMS_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t */

#ifdef __cplusplus
extern "C" {
#endif

#define TMS_API __attribute__((visibility("default")))

/* The status codes, written once as (name, value, meaning): the enum below,
 * tms_status_name() and tms_status_count() are made from this list, and the
 * Python package reads the names through tms_status_name(). Values run 0, 1,
 * 2, ... in list order (the library's build checks it): a new status is one
 * more line at the end. */
#define TMS_STATUS_LIST(X)                                                \
  X(TMS_OK, 0, "success")                                                 \
  X(TMS_ERROR_OUT_OF_MEMORY, 1, "device or host memory exhausted")        \
  X(TMS_ERROR_INVALID_ARGUMENT, 2, "null/unknown argument")               \
  X(TMS_ERROR_INVALID_STATE, 3, "not allowed now (e.g. used after fork)") \
  X(TMS_ERROR_DRIVER, 4, "a driver call failed")                          \
  X(TMS_ERROR_DRIVER_UNAVAILABLE, 5, "libcuda.so.1 missing or too old")   \
  X(TMS_ERROR_IO, 6, "host I/O (disk backup, mmap) failed")               \
  X(TMS_ERROR_CONFIG, 7, "bad environment value or setting")              \
  X(TMS_ERROR_INTERNAL, 8, "a bug: please report")

#define TMS_STATUS_ENUMERATOR_(name, value, meaning) name = value,
typedef enum tms_status { TMS_STATUS_LIST(TMS_STATUS_ENUMERATOR_) } tms_status;
#undef TMS_STATUS_ENUMERATOR_

/* ---- errors and identity ------------------------------------------------ */

/** Message of the calling thread's last failed call ("" if none). */
TMS_API const char* tms_last_error(void);
/** Status code of the calling thread's last failed call (TMS_OK if none). */
TMS_API int tms_last_status(void);
/** Symbolic name of a status code, e.g. "TMS_ERROR_OUT_OF_MEMORY"
 *  ("TMS_ERROR_UNKNOWN_STATUS" for a value that is not a status). */
TMS_API const char* tms_status_name(int status);
/** Number of status codes: every value from 0 to tms_status_count() - 1 is
 *  a tms_status with its own name, so bindings read the names from here
 *  instead of copying the numbers. */
TMS_API int tms_status_count(void);
/** Library version string, e.g. "0.1.0". */
TMS_API const char* tms_version(void);
/** Creates the engine now (otherwise done on first use) and reports
 *  configuration errors (TMS_ERROR_CONFIG, e.g. a TMS_* variable with a
 *  bad value) or a CUDA driver that cannot be loaded
 *  (TMS_ERROR_DRIVER_UNAVAILABLE). */
TMS_API int tms_init(void);
/** Name of the driver the engine runs on: "cuda" or "sim". Creates the
 *  engine if needed; NULL on failure (see tms_last_error). */
TMS_API const char* tms_driver_name(void);

/* ---- per-thread region settings ----------------------------------------- */

/** Whether allocations made by this thread through the hooks go to the
 *  engine (true inside `region()`). */
TMS_API int tms_set_interesting_region(bool is_interesting);
TMS_API bool tms_get_interesting_region(void);
/** Tag given to this thread's next allocations. NULL is rejected. The
 *  returned pointer stays valid until this thread sets another tag. */
TMS_API int tms_set_current_tag(const char* tag);
TMS_API const char* tms_get_current_tag(void);
/** What happens to the contents of this thread's next allocations while
 *  they are paused: the backup policy, one value.
 *
 *  kind:
 *   - TMS_BACKUP_NONE: discarded; resume gives memory of undefined contents.
 *   - TMS_BACKUP_HOST: copied to host memory and back.
 *   - TMS_BACKUP_HOST_COMPRESSED: compressed on the device first (lossless;
 *     bf16/fp16 weights take ~0.7 of their size, other data is stored as is
 *     plus at most 20 bytes per 32 KiB), only the stored bytes go to host
 *     memory. Needs a device scratch of ~64 MiB for the length of a pause or
 *     resume; never retained after resume and not readable in place
 *     (tms_lease_cpu_backup fails with TMS_ERROR_INVALID_STATE).
 *   - TMS_BACKUP_DISK: written to one unnamed file in the disk backup
 *     directory (through a host staging buffer of one chunk of
 *     TMS_DISK_BACKUP_CHUNK_MB per transfer in flight, plus one), read back
 *     through the same descriptor and checked against a checksum; the file
 *     is gone after resume, when the allocation is freed, and on any exit of
 *     the process. With no directory set (TMS_DISK_BACKUP_DIR or
 *     tms_set_disk_backup_dir) the first such allocation takes the
 *     default, TMPDIR when it is an absolute path, else /tmp (the files
 *     are unnamed, so a shared sticky directory is safe; /tmp may be
 *     tmpfs, i.e. host memory: set a directory on a disk for large
 *     backups); it fails with TMS_ERROR_CONFIG when that default is not
 *     usable, and with TMS_ERROR_IO for an unusable directory set.
 *  host_memory: where a host backup lives, for the two host kinds only:
 *   TMS_HOST_MEMORY_PINNED (kept in a pool while retain_cpu_backup is on),
 *   TMS_HOST_MEMORY_MMAP (always back to the OS), or TMS_HOST_MEMORY_DEFAULT
 *   (the process default, TMS_INIT_CPU_BACKUP_BACKEND, pinned unless set).
 *   A host memory kind with a kind that keeps no host copy means nothing
 *   and is refused (TMS_ERROR_INVALID_ARGUMENT), as are unknown values.
 *  tms_get_backup_policy reports the host memory of the host kinds as
 *  resolved (never DEFAULT), and DEFAULT for the others. */
typedef enum tms_backup_kind {
  TMS_BACKUP_NONE = 0,
  TMS_BACKUP_HOST = 1,
  TMS_BACKUP_HOST_COMPRESSED = 2,
  TMS_BACKUP_DISK = 3
} tms_backup_kind;

typedef enum tms_host_memory {
  TMS_HOST_MEMORY_DEFAULT = 0,
  TMS_HOST_MEMORY_PINNED = 1,
  TMS_HOST_MEMORY_MMAP = 2
} tms_host_memory;

typedef struct tms_backup_policy {
  int32_t kind;        /* a tms_backup_kind */
  int32_t host_memory; /* a tms_host_memory */
} tms_backup_policy;

TMS_API int tms_set_backup_policy(const tms_backup_policy* policy);
TMS_API int tms_get_backup_policy(tms_backup_policy* policy);

/** The policy one field at a time, as the library this one replaces offers
 *  it. Each call changes the thread's policy and refuses a change that would
 *  make it mean nothing (TMS_ERROR_INVALID_ARGUMENT, policy unchanged):
 *   - cpu backup on: none -> host (process default host memory); refused
 *     while disk backup is on. Off: either host kind -> none.
 *   - backend "pinned" | "mmap": the host memory of a host kind; refused
 *     without a CPU backup (turn it on first).
 *   - disk backup on: none -> disk; refused while a CPU backup is on. Off:
 *     disk -> none.
 *   - compress on: host -> host_compressed; refused without a CPU backup.
 *     Off: host_compressed -> host.
 *  The getters read the same policy (the backend of a policy without host
 *  backup is the process default). */
TMS_API int tms_set_enable_cpu_backup(bool enable);
TMS_API bool tms_get_enable_cpu_backup(void);
TMS_API int tms_set_cpu_backup_backend(const char* backend);
TMS_API const char* tms_get_cpu_backup_backend(void);
TMS_API int tms_set_enable_disk_backup(bool enable);
TMS_API bool tms_get_enable_disk_backup(void);
TMS_API int tms_set_cpu_backup_compress(bool enable);
TMS_API bool tms_get_cpu_backup_compress(void);

/* ---- process-wide settings ----------------------------------------------- */

/** Directory for disk backup files (default: TMS_DISK_BACKUP_DIR, else
 *  TMPDIR or /tmp as described at TMS_BACKUP_DISK). A
 *  missing directory is created with mode 0700 (parents too); a relative
 *  path is taken against the current directory now and stored absolute,
 *  with symbolic links resolved. It must be a directory we can write, owned
 *  by this user or root, and not writable by other users unless it has the
 *  sticky bit; else TMS_ERROR_IO says why and the setting is unchanged.
 *  Applies to files written from now on. Files are unnamed (O_TMPFILE; on
 *  filesystems without it, tms-backup-<pid>-<start time>-<random>.tmp,
 *  unlinked right after creation), are not fsync'ed and use O_DIRECT where
 *  the filesystem allows. */
TMS_API int tms_set_disk_backup_dir(const char* path);
/** The disk backup directory as an absolute path (the default, TMPDIR or
 *  /tmp, while none is set),
 *  with the same buffer convention as tms_stats_json. */
TMS_API int tms_get_disk_backup_dir(char* buffer, size_t capacity, size_t* required);
/** Removes named backup files that processes no longer running left in
 *  `directory` (NULL: the disk backup directory), e.g. after a SIGKILL in
 *  the instant between creating and unlinking one; files of running
 *  processes are left alone. Stores how many it removed in *removed. */
TMS_API int tms_remove_orphaned_backups(const char* directory, uint64_t* removed);
/** An allocation or resume that would leave less than this many bytes free
 *  on its device fails with TMS_ERROR_OUT_OF_MEMORY. */
TMS_API int set_memory_margin_bytes(uint64_t bytes);
TMS_API uint64_t tms_get_memory_margin_bytes(void);
/** Keep host backup memory after resume, to reuse on the next pause (and
 *  to read with tms_get_cpu_backup_pointer). Turning it off frees no backup
 *  at once: each is given back by its allocation's next resume, or free. */
TMS_API int tms_set_retain_cpu_backup(bool retain);
TMS_API bool tms_get_retain_cpu_backup(void);

/* ---- allocation --------------------------------------------------------- */

/** Allocates `size` bytes of pauseable device memory on `device` (-1 = the
 *  current device; below -1 is TMS_ERROR_INVALID_ARGUMENT) with this thread's
 *  region settings. A size that cannot be rounded up to the allocation
 *  granularity without wrapping, or whose address range the address space
 *  cannot hold, is TMS_ERROR_OUT_OF_MEMORY. */
TMS_API int tms_malloc(void** out_ptr, size_t size, int device);
/** Frees memory from tms_malloc (active or paused). An active allocation
 *  first waits for its device's outstanding work, as cudaFree does. */
TMS_API int tms_free(void* ptr);
/** Whether `ptr` lies inside an engine allocation. */
TMS_API bool tms_owns(const void* ptr);

/** torch.cuda.memory.CUDAPluggableAllocator entry points. tms_torch_malloc
 *  returns NULL on out-of-memory (so torch frees its cache and retries) and
 *  on any other failure, leaving the reason in tms_last_error(). */
TMS_API void* tms_torch_malloc(ssize_t size, int device, void* stream);
TMS_API void tms_torch_free(void* ptr, ssize_t size, int device, void* stream);

/* ---- pause and resume ---------------------------------------------------- */

/** Pauses every active allocation of `tag` (NULL: of every tag): backs up
 *  those with a backup policy, waits for their devices, then releases
 *  their physical memory. All or nothing: on failure all stay active,
 *  except that an allocation the failed pause could not map back (a second
 *  driver failure) is broken: the message says so, stats count it in
 *  broken_bytes, later pauses and resumes try to map it back, and until then tms_pause
 *  and tms_resume of its tag fail with TMS_ERROR_INVALID_STATE; tms_free
 *  gives back what it holds. Also TMS_ERROR_INVALID_STATE while the driver
 *  reports a stream capture on a device involved (a blocking stream of
 *  another thread capturing): nothing is done then, the capture goes on. */
TMS_API int tms_pause(const char* tag);
/** Resumes every paused allocation of `tag` (NULL: every tag) at the same
 *  addresses, restoring backups. All or nothing: on failure all stay paused
 *  with their backups, and the message names the bytes needed and free.
 *  On success, the host memory of every backup it restored and does not
 *  retain (retain_cpu_backup) is back with the OS when it returns; one that
 *  cannot be freed does not fail it (counted in deferred_releases, retried
 *  at the next call). TMS_ERROR_INVALID_STATE as for tms_pause (broken
 *  allocations, capture). */
TMS_API int tms_resume(const char* tag);
/** As tms_resume, but returns once everything is mapped, with the plain
 *  host backups still being copied back (compressed and disk backups are
 *  restored before it returns). Do not touch the memory until
 *  tms_wait_restores or tms_wait_restores_on_stream. The host memory of
 *  those backups goes back once their copies are done. A copy that fails
 *  after it returned loses nothing: the backups are kept and the failure is
 *  raised by tms_wait_restores (or the next pause or resume of the tag). */
TMS_API int tms_resume_non_blocking(const char* tag);
/** Returns once the restores of `tag` (NULL: every tag) that
 *  tms_resume_non_blocking left running are done and their host memory is
 *  back. TMS_ERROR_DRIVER when one failed: its allocations stay mapped and
 *  keep their backups; the next call copies them back again (and fails
 *  again if that fails too); tms_free gives them up, tms_discard_backup
 *  drops the backup and keeps the memory. Pause, resume, free, discard and
 *  lease of memory being restored wait for its restore first. */
TMS_API int tms_wait_restores(const char* tag);
/** Makes the work queued on `stream` (a CUstream of any device; NULL: the
 *  legacy stream of the calling thread's current context) from now on wait
 *  for those restores, without blocking the caller. TMS_ERROR_DRIVER for a
 *  restore already known to have failed (no retry: see tms_wait_restores);
 *  one that fails later is raised by the next tms_wait_restores, pause or
 *  resume of the tag. */
TMS_API int tms_wait_restores_on_stream(const char* tag, void* stream);

/** Drops the backup (disk file or host copy) of the paused allocation
 *  holding `ptr`, for a backup that cannot be restored (tms_resume's
 *  TMS_ERROR_IO message names the allocation). Its contents are lost: the
 *  next resume maps it with undefined contents and logs a warning. The
 *  whole allocation is affected, also other tensors inside it.
 *  TMS_ERROR_INVALID_STATE while it is active. */
TMS_API int tms_discard_backup(const void* ptr);

/** Host backup of [ptr, ptr+size), held for the caller until
 *  tms_end_cpu_backup_lease(*lease): while paused, the saved contents; while
 *  active, the backup kept by retain_cpu_backup (what the last pause saved,
 *  at the same address every cycle). The bytes stay readable for the whole
 *  lease even if the allocation is resumed, freed or its backup discarded
 *  meanwhile: its host memory then goes back when the last lease ends
 *  instead of when tms_resume returns. A pause of an active allocation
 *  refreshes a retained backup in place, under a lease too. Stores 0 and
 *  NULL when that range has no host backup (none retained, no backup, a
 *  disk backup, not engine memory). TMS_ERROR_INVALID_ARGUMENT when the
 *  range runs past its allocation or an out pointer is NULL;
 *  TMS_ERROR_INVALID_STATE for a compressed backup (no bytes to read in
 *  place). */
TMS_API int tms_lease_cpu_backup(const void* ptr, uint64_t size, uint64_t* lease, uint8_t** data);
/** Ends a lease of tms_lease_cpu_backup; 0 and ended leases are ignored. */
TMS_API int tms_end_cpu_backup_lease(uint64_t lease);
/** As tms_lease_cpu_backup without a lease, for callers of the library this
 *  one replaces: the pointer is valid only until the allocation's next
 *  resume, free or discard, so do not use it while another thread may do
 *  one of those. A NULL result with tms_last_status() != TMS_OK is an
 *  error. */
TMS_API uint8_t* tms_get_cpu_backup_pointer(const uint8_t* ptr, uint64_t size);

/** Waits until what was given back in the background so far is released:
 *  host backup memory of allocations freed while paused or of a discarded
 *  backup (tms_resume gives its host backups back itself), and disk backup
 *  files, whose descriptors are closed on a background thread after resume,
 *  free or discard (the filesystem frees their space then). Nothing needs
 *  this wait; it is there for code that measures memory or disk space. */
TMS_API int tms_drain_host_releases(void);
/** Gives back host memory kept only for speed (the pinned pool of
 *  retain_cpu_backup and the disk staging buffer). */
TMS_API int tms_trim_host_memory(void);

/* ---- observability ------------------------------------------------------- */

/** Statistics as JSON: {"driver": ..., "deferred_releases": N,
 *  "entries": [{"tag", "device", "allocations", "active_bytes",
 *  "paused_bytes", "broken_bytes" (allocations a failed pause could not map
 *  back, see tms_pause), "backup_bytes" (host), "disk_backup_bytes" (bytes
 *  of paused allocations held in backup files), "pause_count",
 *  "resume_count", "last_pause_seconds", "last_resume_seconds",
 *  "last_pause_unix", "last_resume_unix"}, ...]}. deferred_releases counts
 *  resources whose give-back failed and is retried at the start of the next
 *  operation.
 *  Writes at most `capacity` bytes (NUL included) and stores the size
 *  needed (NUL included) in *required; returns TMS_ERROR_INVALID_ARGUMENT
 *  when the buffer is too small. */
TMS_API int tms_stats_json(char* buffer, size_t capacity, size_t* required);
/** Free and total memory of `device` (-1: the current one) as the driver
 *  reports it. */
TMS_API int tms_device_memory(int device, uint64_t* free_bytes, uint64_t* total_bytes);

/* ---- log lines ------------------------------------------------------------ */

/** The levels of log lines (TMS_LOG_LEVEL: error, warning, info, debug). */
typedef enum tms_log_level {
  TMS_LOG_ERROR = 0,
  TMS_LOG_WARNING = 1,
  TMS_LOG_INFO = 2,
  TMS_LOG_DEBUG = 3
} tms_log_level;

/** Receives one log line: its tms_log_level and its message (UTF-8 as
 *  logged, control characters escaped, led by "rank N: " where torchrun's
 *  RANK is set, without the "[torch_memory_saver LEVEL]" prefix of stderr
 *  lines). Returns nonzero when it took the line, 0 to have the library
 *  write it to stderr as it does without a callback. */
typedef int (*tms_log_callback)(int level, const char* message);

/** Sends log lines to `callback` instead of stderr (NULL: stderr again).
 *  Only lines at or above TMS_LOG_LEVEL are made at all. The callback runs
 *  on one library thread, one line at a time in the order logged, and never
 *  while the library holds a lock: the library's threads only queue lines
 *  (up to 4096 waiting; more are dropped and a warning line counts them),
 *  so a callback may block, take an interpreter lock (Python's GIL) or call
 *  the library. Lines still queued go to the new callback (or stderr).
 *  Returns once a call of the previous callback in progress has returned,
 *  so its resources may then be freed (not when called from inside a
 *  callback). Needs no engine: it works before the first allocation and in
 *  a fork()ed child, which starts with no callback. Unset it before the
 *  callback's code or interpreter goes away (e.g. at exit).
 *  TMS_ERROR_INVALID_STATE when the library's log thread cannot start. */
TMS_API int tms_set_log_callback(tms_log_callback callback);
/** Returns once every line logged before the call has been handed to the
 *  callback (or written to stderr); at once from inside a callback. */
TMS_API int tms_flush_log(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TORCH_MEMORY_SAVER_TMS_H_ */
