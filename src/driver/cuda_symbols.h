// The one list of CUDA driver entry points CudaDriver uses (X-macro, in the
// style of PyTorch's c10/cuda/driver_api.h).
//
// Each entry is _(name, version): `name` is the unversioned symbol handed to
// cuGetProcAddress, `version` picks the function-pointer type
// PFN_<name>_v<version> from <cudaTypedefs.h>. The types are spelled out by
// version instead of decltype(&name) because cuda.h remaps some names with
// #define (cuMemGetInfo -> cuMemGetInfo_v2) and may remap more in later
// toolkits; a pinned type cannot drift away from the pinned ABI we request
// (kCudaAbiVersion in cuda_driver.cpp). Every version here must be the
// variant that cuGetProcAddress returns for that ABI version.
//
// Use only `#name` and `name##...` on the name: a plain `name` is expanded by
// the preprocessor into cuda.h's versioned alias.
#pragma once

// The toolkit's header where the build found one, else the engine's own
// declarations of the same names (checked against cuda.h by a test).
#ifdef TMS_HAVE_CUDA_H
#include <cuda.h>
#include <cudaTypedefs.h>
#else
#include "driver/cuda_decls.h"
#endif

#define TMS_CUDA_SYMBOLS(_)               \
  _(cuGetErrorName, 6000)                 \
  _(cuInit, 2000)                         \
  _(cuDriverGetVersion, 2020)             \
  _(cuDeviceGet, 2000)                    \
  _(cuDeviceGetCount, 2000)               \
  _(cuDevicePrimaryCtxRetain, 7000)       \
  _(cuDevicePrimaryCtxRelease, 11000)     \
  _(cuCtxGetCurrent, 4000)                \
  _(cuCtxPushCurrent, 4000)               \
  _(cuCtxPopCurrent, 4000)                \
  _(cuCtxGetDevice, 2000)                 \
  _(cuCtxSynchronize, 2000)               \
  _(cuMemGetInfo, 3020)                   \
  _(cuMemGetAllocationGranularity, 10020) \
  _(cuMemAddressReserve, 10020)           \
  _(cuMemAddressFree, 10020)              \
  _(cuMemCreate, 10020)                   \
  _(cuMemRelease, 10020)                  \
  _(cuMemMap, 10020)                      \
  _(cuMemUnmap, 10020)                    \
  _(cuMemSetAccess, 10020)                \
  _(cuMemHostRegister, 6050)              \
  _(cuMemHostUnregister, 4000)            \
  _(cuStreamCreate, 2000)                 \
  _(cuStreamDestroy, 4000)                \
  _(cuStreamSynchronize, 2000)            \
  _(cuStreamIsCapturing, 10000)           \
  _(cuEventCreate, 2000)                  \
  _(cuEventDestroy, 4000)                 \
  _(cuEventRecord, 2000)                  \
  _(cuEventSynchronize, 2000)             \
  _(cuStreamWaitEvent, 3020)              \
  _(cuMemcpyDtoHAsync, 3020)              \
  _(cuMemcpyHtoDAsync, 3020)              \
  _(cuModuleLoadData, 2000)               \
  _(cuModuleUnload, 2000)                 \
  _(cuModuleGetFunction, 2000)            \
  _(cuLaunchKernel, 4000)
