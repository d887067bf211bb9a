/* A stand-in for libcuda.so.1 in the CudaDriver tests: enough of the driver
 * API to load (cuGetProcAddress resolves every symbol, CUDA 12.0, a current
 * context) and a cuMemAddressReserve that fails the way the real one does, so
 * the translation of its results is tested without a GPU. Every other entry
 * point answers CUDA_ERROR_NOT_SUPPORTED. */
#include <stddef.h>
#include <string.h>

enum {
  kSuccess = 0,
  kInvalidValue = 1,
  kOutOfMemory = 2,
  kNotSupported = 801,
};

/* Reservations from this size on find no free range (as on a GPU, whose
 * virtual address space is 2^47 to 2^49 bytes); smaller ones are refused as
 * invalid, so that a failure other than out-of-memory can be tested too. */
#define FAKE_ADDRESS_SPACE ((size_t)1 << 47)

static int context_marker;

static int fake_get_error_name(int result, const char** name) {
  switch (result) {
    case kSuccess:
      *name = "CUDA_SUCCESS";
      return kSuccess;
    case kInvalidValue:
      *name = "CUDA_ERROR_INVALID_VALUE";
      return kSuccess;
    case kOutOfMemory:
      *name = "CUDA_ERROR_OUT_OF_MEMORY";
      return kSuccess;
    case kNotSupported:
      *name = "CUDA_ERROR_NOT_SUPPORTED";
      return kSuccess;
    default:
      *name = NULL;
      return kInvalidValue;
  }
}

static int fake_driver_get_version(int* version) {
  *version = 12000;
  return kSuccess;
}

static int fake_init(unsigned flags) {
  (void)flags;
  return kSuccess;
}

/* A context is current, so CudaDriver pushes none. */
static int fake_ctx_get_current(void** context) {
  *context = &context_marker;
  return kSuccess;
}

static int fake_mem_address_reserve(unsigned long long* va, size_t size, size_t alignment,
                                    unsigned long long address, unsigned long long flags) {
  (void)alignment;
  (void)address;
  (void)flags;
  *va = 0;
  return size >= FAKE_ADDRESS_SPACE ? kOutOfMemory : kInvalidValue;
}

static int fake_not_supported(void) { return kNotSupported; }

int cuGetProcAddress_v2(const char* symbol, void** function, int version, unsigned long long flags,
                        int* status) {
  (void)version;
  (void)flags;
  if (strcmp(symbol, "cuGetErrorName") == 0) {
    *function = (void*)fake_get_error_name;
  } else if (strcmp(symbol, "cuDriverGetVersion") == 0) {
    *function = (void*)fake_driver_get_version;
  } else if (strcmp(symbol, "cuInit") == 0) {
    *function = (void*)fake_init;
  } else if (strcmp(symbol, "cuCtxGetCurrent") == 0) {
    *function = (void*)fake_ctx_get_current;
  } else if (strcmp(symbol, "cuMemAddressReserve") == 0) {
    *function = (void*)fake_mem_address_reserve;
  } else {
    *function = (void*)fake_not_supported;
  }
  if (status != NULL) *status = 0; /* CU_GET_PROC_ADDRESS_SUCCESS */
  return kSuccess;
}
