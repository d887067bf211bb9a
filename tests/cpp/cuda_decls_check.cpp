// Built only where the CUDA toolkit's cuda.h is present: proves at compile
// time that src/driver/cuda_decls.h (what the engine uses without a toolkit)
// declares the same types, constants, layouts and entry-point signatures as
// cuda.h and cudaTypedefs.h. A mismatch fails the build of this test.
//
// The macro both headers define (CU_MEMHOSTREGISTER_PORTABLE) is checked by
// the preprocessor: redefining a macro with a different value is a warning,
// an error under -Werror.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

#include "driver/cuda_symbols.h"  // TMS_CUDA_SYMBOLS: the entry points CudaDriver resolves

namespace decl {
#include "driver/cuda_decls.h"
}

namespace {

// real_t<T>: T with every decl:: type replaced by cuda.h's type of the same
// name, through pointers, const and function types, so that a PFN type of
// cuda_decls.h can be compared with cudaTypedefs.h's with std::is_same.
template <class T>
struct real {
  using type = T;
};
template <class T>
using real_t = typename real<T>::type;
template <class T>
struct real<T*> {
  using type = real_t<T>*;
};
template <class T>
struct real<const T> {
  using type = const real_t<T>;
};
template <class R, class... A>
struct real<R(A...)> {
  using type = real_t<R>(real_t<A>...);
};
#define TMS_SAME_NAME(tag) \
  template <>              \
  struct real<decl::tag> { \
    using type = ::tag;    \
  };
TMS_SAME_NAME(cudaError_enum)
TMS_SAME_NAME(CUstreamCaptureStatus_enum)
TMS_SAME_NAME(CUdriverProcAddressQueryResult_enum)
TMS_SAME_NAME(CUmemAllocationGranularity_flags_enum)
TMS_SAME_NAME(CUmemAllocationProp_st)
TMS_SAME_NAME(CUmemAccessDesc_st)
#undef TMS_SAME_NAME

#define TMS_SAME_TYPE(name) static_assert(std::is_same_v<decl::name, ::name>, #name);
TMS_SAME_TYPE(cuuint64_t)
TMS_SAME_TYPE(CUdeviceptr)
TMS_SAME_TYPE(CUdeviceptr_v2)
TMS_SAME_TYPE(CUdevice)
TMS_SAME_TYPE(CUdevice_v1)
TMS_SAME_TYPE(CUmemGenericAllocationHandle)
TMS_SAME_TYPE(CUmemGenericAllocationHandle_v1)
#undef TMS_SAME_TYPE

#define TMS_SAME_MAPPED(name) static_assert(std::is_same_v<real_t<decl::name>, ::name>, #name);
TMS_SAME_MAPPED(CUcontext)
TMS_SAME_MAPPED(CUstream)
TMS_SAME_MAPPED(CUevent)
TMS_SAME_MAPPED(CUmodule)
TMS_SAME_MAPPED(CUfunction)
TMS_SAME_MAPPED(CUresult)
TMS_SAME_MAPPED(CUmemAllocationProp)
TMS_SAME_MAPPED(CUmemAccessDesc)
#undef TMS_SAME_MAPPED

#define TMS_SAME_VALUE(name)                                                                  \
  static_assert(static_cast<long long>(decl::name) == static_cast<long long>(::name), #name); \
  static_assert(sizeof(decl::name) == sizeof(::name), #name);
TMS_SAME_VALUE(CUDA_SUCCESS)
TMS_SAME_VALUE(CUDA_ERROR_OUT_OF_MEMORY)
TMS_SAME_VALUE(CU_STREAM_NON_BLOCKING)
TMS_SAME_VALUE(CU_EVENT_DISABLE_TIMING)
TMS_SAME_VALUE(CU_EVENT_BLOCKING_SYNC)
TMS_SAME_VALUE(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT)
TMS_SAME_VALUE(CU_STREAM_CAPTURE_STATUS_NONE)
TMS_SAME_VALUE(CU_GET_PROC_ADDRESS_DEFAULT)
TMS_SAME_VALUE(CU_GET_PROC_ADDRESS_SUCCESS)
TMS_SAME_VALUE(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)
TMS_SAME_VALUE(CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT)
TMS_SAME_VALUE(CU_MEM_HANDLE_TYPE_NONE)
TMS_SAME_VALUE(CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
TMS_SAME_VALUE(CU_MEM_LOCATION_TYPE_DEVICE)
TMS_SAME_VALUE(CU_MEM_ALLOCATION_TYPE_PINNED)
TMS_SAME_VALUE(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
#undef TMS_SAME_VALUE

#define TMS_SAME_LAYOUT(type)                                 \
  static_assert(sizeof(decl::type) == sizeof(::type), #type); \
  static_assert(alignof(decl::type) == alignof(::type), #type);
#define TMS_SAME_MEMBER(type, member)                                               \
  static_assert(offsetof(decl::type, member) == offsetof(::type, member), #member); \
  static_assert(sizeof(decl::type::member) == sizeof(::type::member), #member);
TMS_SAME_LAYOUT(CUmemLocation)
TMS_SAME_MEMBER(CUmemLocation, type)
TMS_SAME_MEMBER(CUmemLocation, id)
TMS_SAME_LAYOUT(CUmemAllocationProp)
TMS_SAME_MEMBER(CUmemAllocationProp, type)
TMS_SAME_MEMBER(CUmemAllocationProp, requestedHandleTypes)
TMS_SAME_MEMBER(CUmemAllocationProp, location)
TMS_SAME_MEMBER(CUmemAllocationProp, win32HandleMetaData)
TMS_SAME_MEMBER(CUmemAllocationProp, allocFlags)
TMS_SAME_LAYOUT(CUmemAccessDesc)
TMS_SAME_MEMBER(CUmemAccessDesc, location)
TMS_SAME_MEMBER(CUmemAccessDesc, flags)
#undef TMS_SAME_MEMBER
#undef TMS_SAME_LAYOUT

// Every entry point the engine resolves, and both cuGetProcAddress variants.
#define TMS_SAME_SIGNATURE(name, version)                                                         \
  static_assert(std::is_same_v<real_t<decl::PFN_##name##_v##version>, ::PFN_##name##_v##version>, \
                #name);
TMS_CUDA_SYMBOLS(TMS_SAME_SIGNATURE)
TMS_SAME_SIGNATURE(cuGetProcAddress, 12000)
TMS_SAME_SIGNATURE(cuGetProcAddress, 11030)
#undef TMS_SAME_SIGNATURE

}  // namespace

#define TMS_STR2(x) #x
#define TMS_STR(x) TMS_STR2(x)

int main() {
  std::puts("cuda_decls.h matches cuda.h of CUDA_VERSION " TMS_STR(CUDA_VERSION));
  return 0;
}
