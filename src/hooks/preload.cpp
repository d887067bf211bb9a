// LD_PRELOAD interposers for the CUDA runtime's cudaMalloc and cudaFree.
//
// Allocations made while the calling thread is inside a region (or in
// trainer-wide mode, TMS_INIT_ENABLE=1) go to the engine; everything else is
// forwarded to the real runtime found with dlsym(RTLD_NEXT). The library is
// not linked against libcudart, so one binary serves every CUDA version and
// both hook modes.
#include <dlfcn.h>

#include <cstddef>

#include "capi/runtime.h"
#include "torch_memory_saver/tms.h"

namespace {

// Values of cudaError_t this file returns (stable across CUDA versions).
constexpr int kCudaSuccess = 0;
constexpr int kCudaErrorInvalidValue = 1;
constexpr int kCudaErrorMemoryAllocation = 2;
constexpr int kCudaErrorInitializationError = 3;
constexpr int kCudaErrorUnknown = 999;

using CudaMallocFn = int (*)(void**, std::size_t);
using CudaFreeFn = int (*)(void*);

template <typename Fn>
Fn next_symbol(const char* name) {
  // Resolved once per process; dlsym is thread-safe.
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

// The runtime's answer for each tms_status. The switch names every status of
// TMS_STATUS_LIST (tms.h) and has no default, so the compiler flags a new
// status (-Wswitch, an error under TMS_WERROR as CI builds) until it is
// given its cudaError_t here.
int to_cuda_error(int status) {
  if (status < 0 || status >= tms_status_count()) return kCudaErrorUnknown;
  switch (static_cast<tms_status>(status)) {
    case TMS_OK:
      return kCudaSuccess;
    case TMS_ERROR_OUT_OF_MEMORY:
      return kCudaErrorMemoryAllocation;
    case TMS_ERROR_INVALID_ARGUMENT:
      return kCudaErrorInvalidValue;
    case TMS_ERROR_INVALID_STATE:  // e.g. in a fork()ed child: the runtime's answer there
      return kCudaErrorInitializationError;
    case TMS_ERROR_DRIVER:
    case TMS_ERROR_DRIVER_UNAVAILABLE:
    case TMS_ERROR_IO:
    case TMS_ERROR_CONFIG:
    case TMS_ERROR_INTERNAL:
      return kCudaErrorUnknown;
  }
  return kCudaErrorUnknown;
}

}  // namespace

extern "C" {

TMS_API int cudaMalloc(void** dev_ptr, std::size_t size) {
  if (tms_get_interesting_region()) {
    if (dev_ptr == nullptr) return kCudaErrorInvalidValue;
    if (size == 0) {
      *dev_ptr = nullptr;  // as the runtime does: nothing to allocate
      return kCudaSuccess;
    }
    return to_cuda_error(tms_malloc(dev_ptr, size, -1));
  }
  static const CudaMallocFn real = next_symbol<CudaMallocFn>("cudaMalloc");
  return real != nullptr ? real(dev_ptr, size) : kCudaErrorInitializationError;
}

TMS_API int cudaFree(void* dev_ptr) {
  // Only an engine that exists can own the pointer; never create one here.
  if (dev_ptr != nullptr && tms::runtime_if_created() != nullptr) {
    // In a fork()ed child the engine cannot tell its pointers from others
    // without a lock the parent's threads may hold: refuse them all, the
    // parent's GPU context is unusable there anyway.
    if (tms::in_forked_child() || tms_owns(dev_ptr)) return to_cuda_error(tms_free(dev_ptr));
  }
  static const CudaFreeFn real = next_symbol<CudaFreeFn>("cudaFree");
  return real != nullptr ? real(dev_ptr) : kCudaErrorInitializationError;
}

}  // extern "C"
