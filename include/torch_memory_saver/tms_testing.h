/*
 * torch_memory_saver testing controls.
 *
 * Exported by the same library as tms.h but not part of the API a program
 * builds on: tests use them to make driver calls fail and to shrink the
 * simulated device (TMS_DRIVER=sim). Installed beside tms.h so that a
 * program's own tests can reach them too. Same conventions as tms.h.
 */
#ifndef TORCH_MEMORY_SAVER_TMS_TESTING_H_
#define TORCH_MEMORY_SAVER_TMS_TESTING_H_

#include "torch_memory_saver/tms.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Makes the `nth` (1-based) next call of `call` fail before it reaches the
 *  driver, on whichever driver the engine runs (the engine's driver is always
 *  wrapped in the fault injector); `out_of_memory` chooses an out-of-memory
 *  failure over a generic driver error. Call names:
 *  "reserve", "free_reservation", "create_physical", "release_physical",
 *  "map", "unmap", "set_access", "host_alloc", "host_free",
 *  "host_register", "host_unregister", "copy_to_host", "copy_to_device",
 *  "synchronize", "create_stream", "destroy_stream", "synchronize_stream",
 *  "create_event", "destroy_event", "record_event", "synchronize_event" (its
 *  failure stands for a copy that failed after it was queued, e.g. behind a
 *  non-blocking resume), "stream_wait_event", "capture_underway", "codec"
 *  (the compressed-backup kernels).
 *  TMS_ERROR_INVALID_ARGUMENT for another name or nth < 1. */
TMS_API int tms_sim_fail_call(const char* call, int nth, bool out_of_memory);
/** Sets the simulated capacity of every device in bytes.
 *  TMS_ERROR_INVALID_STATE when the engine is not on the simulated driver. */
TMS_API int tms_sim_set_capacity(uint64_t bytes_per_device);
/** While `deferred`, the simulated driver queues copies on their stream
 *  instead of making them at once, as a GPU runs them behind the caller:
 *  they happen when their stream, an event on it or their device is waited
 *  for (tms_wait_restores, a pause, ...). For tests of what must wait.
 *  TMS_ERROR_INVALID_STATE when the engine is not on the simulated driver. */
TMS_API int tms_sim_defer_copies(bool deferred);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TORCH_MEMORY_SAVER_TMS_TESTING_H_ */
