// The part of the CUDA driver API that CudaDriver uses, declared here so that
// the engine builds without a CUDA toolkit (a user with only a pip-installed
// PyTorch has no cuda.h). Nothing links against CUDA: these are the types,
// constants and cudaTypedefs.h function-pointer types of the entry points
// resolved at run time through cuGetProcAddress.
//
// Names, enum tags, values and layouts are cuda.h's (stable driver ABI, CUDA
// 12.0+, 64-bit Linux). Where cuda.h is present the build uses it instead,
// and tests/cpp/cuda_decls_check.cpp proves that every declaration here is
// the same type as cuda.h's. Keep this file to what cuda_driver.cpp uses.
//
// No #include on purpose: the check includes this file inside a namespace,
// next to cuda.h. __SIZE_TYPE__ and __UINT64_TYPE__ are size_t and uint64_t
// (GCC and Clang predefine them).
#pragma once

#define CUDAAPI

typedef __UINT64_TYPE__ cuuint64_t;
typedef unsigned long long CUdeviceptr_v2;
typedef CUdeviceptr_v2 CUdeviceptr;
typedef int CUdevice_v1;
typedef CUdevice_v1 CUdevice;
typedef struct CUctx_st* CUcontext;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef unsigned long long CUmemGenericAllocationHandle_v1;
typedef CUmemGenericAllocationHandle_v1 CUmemGenericAllocationHandle;

typedef enum cudaError_enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906,
} CUresult;

typedef enum CUstream_flags_enum { CU_STREAM_NON_BLOCKING = 0x1 } CUstream_flags;

typedef enum CUstreamCaptureStatus_enum {
  CU_STREAM_CAPTURE_STATUS_NONE = 0,
  CU_STREAM_CAPTURE_STATUS_ACTIVE = 1,
  CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2
} CUstreamCaptureStatus;

#define CU_STREAM_LEGACY ((CUstream)0x1)

typedef enum CUevent_flags_enum {
  CU_EVENT_BLOCKING_SYNC = 0x1,
  CU_EVENT_DISABLE_TIMING = 0x2
} CUevent_flags;

typedef enum CUdriverProcAddress_flags_enum {
  CU_GET_PROC_ADDRESS_DEFAULT = 0
} CUdriverProcAddress_flags;

typedef enum CUdriverProcAddressQueryResult_enum {
  CU_GET_PROC_ADDRESS_SUCCESS = 0,
  CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND = 1,
  CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT = 2,
} CUdriverProcAddressQueryResult;

#define CU_MEMHOSTREGISTER_PORTABLE 0x01

typedef enum CUmemAllocationHandleType_enum {
  CU_MEM_HANDLE_TYPE_NONE = 0x0
} CUmemAllocationHandleType;
typedef enum CUmemAccess_flags_enum { CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3 } CUmemAccess_flags;
typedef enum CUmemLocationType_enum { CU_MEM_LOCATION_TYPE_DEVICE = 0x1 } CUmemLocationType;
typedef enum CUmemAllocationType_enum { CU_MEM_ALLOCATION_TYPE_PINNED = 0x1 } CUmemAllocationType;
typedef enum CUmemAllocationGranularity_flags_enum {
  CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1
} CUmemAllocationGranularity_flags;

typedef struct CUmemLocation_st {
  CUmemLocationType type;
  int id;
} CUmemLocation_v1;
typedef CUmemLocation_v1 CUmemLocation;

typedef struct CUmemAllocationProp_st {
  CUmemAllocationType type;
  CUmemAllocationHandleType requestedHandleTypes;
  CUmemLocation location;
  void* win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
} CUmemAllocationProp_v1;
typedef CUmemAllocationProp_v1 CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
  CUmemLocation location;
  CUmemAccess_flags flags;
} CUmemAccessDesc_v1;
typedef CUmemAccessDesc_v1 CUmemAccessDesc;

// Function-pointer types, as cudaTypedefs.h spells them (PFN_<name>_v<version>).
typedef CUresult(CUDAAPI* PFN_cuGetErrorName_v6000)(CUresult error, const char** pStr);
typedef CUresult(CUDAAPI* PFN_cuInit_v2000)(unsigned int Flags);
typedef CUresult(CUDAAPI* PFN_cuDriverGetVersion_v2020)(int* driverVersion);
typedef CUresult(CUDAAPI* PFN_cuDeviceGet_v2000)(CUdevice_v1* device, int ordinal);
typedef CUresult(CUDAAPI* PFN_cuDeviceGetCount_v2000)(int* count);
typedef CUresult(CUDAAPI* PFN_cuDevicePrimaryCtxRetain_v7000)(CUcontext* pctx, CUdevice_v1 dev);
typedef CUresult(CUDAAPI* PFN_cuDevicePrimaryCtxRelease_v11000)(CUdevice_v1 dev);
typedef CUresult(CUDAAPI* PFN_cuCtxGetCurrent_v4000)(CUcontext* pctx);
typedef CUresult(CUDAAPI* PFN_cuCtxPushCurrent_v4000)(CUcontext ctx);
typedef CUresult(CUDAAPI* PFN_cuCtxPopCurrent_v4000)(CUcontext* pctx);
typedef CUresult(CUDAAPI* PFN_cuCtxGetDevice_v2000)(CUdevice_v1* device);
typedef CUresult(CUDAAPI* PFN_cuCtxSynchronize_v2000)(void);
typedef CUresult(CUDAAPI* PFN_cuMemGetInfo_v3020)(__SIZE_TYPE__* free, __SIZE_TYPE__* total);
typedef CUresult(CUDAAPI* PFN_cuMemGetAllocationGranularity_v10020)(
    __SIZE_TYPE__* granularity, const CUmemAllocationProp_v1* prop,
    CUmemAllocationGranularity_flags option);
typedef CUresult(CUDAAPI* PFN_cuMemAddressReserve_v10020)(CUdeviceptr_v2* ptr, __SIZE_TYPE__ size,
                                                          __SIZE_TYPE__ alignment,
                                                          CUdeviceptr_v2 addr,
                                                          unsigned long long flags);
typedef CUresult(CUDAAPI* PFN_cuMemAddressFree_v10020)(CUdeviceptr_v2 ptr, __SIZE_TYPE__ size);
typedef CUresult(CUDAAPI* PFN_cuMemCreate_v10020)(CUmemGenericAllocationHandle_v1* handle,
                                                  __SIZE_TYPE__ size,
                                                  const CUmemAllocationProp_v1* prop,
                                                  unsigned long long flags);
typedef CUresult(CUDAAPI* PFN_cuMemRelease_v10020)(CUmemGenericAllocationHandle_v1 handle);
typedef CUresult(CUDAAPI* PFN_cuMemMap_v10020)(CUdeviceptr_v2 ptr, __SIZE_TYPE__ size,
                                               __SIZE_TYPE__ offset,
                                               CUmemGenericAllocationHandle_v1 handle,
                                               unsigned long long flags);
typedef CUresult(CUDAAPI* PFN_cuMemUnmap_v10020)(CUdeviceptr_v2 ptr, __SIZE_TYPE__ size);
typedef CUresult(CUDAAPI* PFN_cuMemSetAccess_v10020)(CUdeviceptr_v2 ptr, __SIZE_TYPE__ size,
                                                     const CUmemAccessDesc_v1* desc,
                                                     __SIZE_TYPE__ count);
typedef CUresult(CUDAAPI* PFN_cuMemHostRegister_v6050)(void* p, __SIZE_TYPE__ bytesize,
                                                       unsigned int Flags);
typedef CUresult(CUDAAPI* PFN_cuMemHostUnregister_v4000)(void* p);
typedef CUresult(CUDAAPI* PFN_cuStreamCreate_v2000)(CUstream* phStream, unsigned int Flags);
typedef CUresult(CUDAAPI* PFN_cuStreamDestroy_v4000)(CUstream hStream);
typedef CUresult(CUDAAPI* PFN_cuStreamSynchronize_v2000)(CUstream hStream);
typedef CUresult(CUDAAPI* PFN_cuStreamIsCapturing_v10000)(CUstream hStream,
                                                          CUstreamCaptureStatus* captureStatus);
typedef CUresult(CUDAAPI* PFN_cuEventCreate_v2000)(CUevent* phEvent, unsigned int Flags);
typedef CUresult(CUDAAPI* PFN_cuEventDestroy_v4000)(CUevent hEvent);
typedef CUresult(CUDAAPI* PFN_cuEventRecord_v2000)(CUevent hEvent, CUstream hStream);
typedef CUresult(CUDAAPI* PFN_cuEventSynchronize_v2000)(CUevent hEvent);
typedef CUresult(CUDAAPI* PFN_cuStreamWaitEvent_v3020)(CUstream hStream, CUevent hEvent,
                                                       unsigned int Flags);
typedef CUresult(CUDAAPI* PFN_cuMemcpyDtoHAsync_v3020)(void* dstHost, CUdeviceptr_v2 srcDevice,
                                                       __SIZE_TYPE__ ByteCount, CUstream hStream);
typedef CUresult(CUDAAPI* PFN_cuMemcpyHtoDAsync_v3020)(CUdeviceptr_v2 dstDevice,
                                                       const void* srcHost, __SIZE_TYPE__ ByteCount,
                                                       CUstream hStream);
typedef CUresult(CUDAAPI* PFN_cuGetProcAddress_v12000)(const char* symbol, void** pfn,
                                                       int driverVersion, cuuint64_t flags,
                                                       CUdriverProcAddressQueryResult* symbolFound);
typedef CUresult(CUDAAPI* PFN_cuGetProcAddress_v11030)(const char* symbol, void** pfn,
                                                       int driverVersion, cuuint64_t flags);
typedef CUresult(CUDAAPI* PFN_cuModuleLoadData_v2000)(CUmodule* module, const void* image);
typedef CUresult(CUDAAPI* PFN_cuModuleUnload_v2000)(CUmodule hmod);
typedef CUresult(CUDAAPI* PFN_cuModuleGetFunction_v2000)(CUfunction* hfunc, CUmodule hmod,
                                                         const char* name);
typedef CUresult(CUDAAPI* PFN_cuLaunchKernel_v4000)(CUfunction f, unsigned int gridDimX,
                                                    unsigned int gridDimY, unsigned int gridDimZ,
                                                    unsigned int blockDimX, unsigned int blockDimY,
                                                    unsigned int blockDimZ,
                                                    unsigned int sharedMemBytes, CUstream hStream,
                                                    void** kernelParams, void** extra);
