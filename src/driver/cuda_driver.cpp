// CudaDriver (cuda_driver.h). About 600 lines: every call of the Driver seam on
// the CUDA driver API, with what they all share (the entry-point table loaded
// from libcuda, the error translation and the context guard), which would
// otherwise have to be exported to several files.
#include "driver/cuda_driver.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "codec/codec_ptx.h"
#include "codec/format.h"
#include "common/errors.h"
#include "common/sizes.h"
#include "driver/cuda_symbols.h"

namespace tms {
namespace {

// ABI version every entry point is requested at. 12.0 is the oldest driver we
// support, and pinning it keeps the signatures in cuda_symbols.h valid on
// newer drivers, which may have changed a symbol's default variant.
constexpr int kCudaAbiVersion = 12000;

// The driver's entry points, one member `<name>_` per cuda_symbols.h entry
// (the trailing underscore keeps cuda.h's #define aliases out of the names).
struct CudaApi {
#define TMS_CUDA_MEMBER(name, version) PFN_##name##_v##version name##_ = nullptr;
  TMS_CUDA_SYMBOLS(TMS_CUDA_MEMBER)
#undef TMS_CUDA_MEMBER
};

std::string dl_error() {
  const char* message = dlerror();
  return message != nullptr ? message : "no error reported by dlerror()";
}

std::string result_name(const CudaApi& api, CUresult result) {
  const char* name = nullptr;
  if (api.cuGetErrorName_ != nullptr && api.cuGetErrorName_(result, &name) == CUDA_SUCCESS &&
      name != nullptr) {
    return name;
  }
  return "CUresult " + std::to_string(static_cast<int>(result));
}

[[noreturn]] void throw_cuda_error(const CudaApi& api, const char* call, CUresult result,
                                   const std::string& detail) {
  throw DriverError(call, result_name(api, result), detail);
}

// Calls api.fn(args...) and throws DriverError naming `fn`, its CUresult and
// `detail` when it fails. `detail` is only evaluated on failure, so it may
// build strings freely.
#define TMS_CU_TRY(api, fn, detail, ...)                     \
  do {                                                       \
    const CUresult tms_cu_result = (api).fn##_(__VA_ARGS__); \
    if (tms_cu_result != CUDA_SUCCESS) [[unlikely]] {        \
      throw_cuda_error((api), #fn, tms_cu_result, (detail)); \
    }                                                        \
  } while (0)

std::string on_device(int device) { return "device " + std::to_string(device); }

std::string range(std::uintptr_t va, std::size_t size) {
  return "va " + hex_address(va) + ", size " + describe_bytes(size);
}

// MemAvailable from /proc/meminfo: what a host allocation can still get
// without swapping. 0 when unknown.
std::size_t host_available_bytes() {
  std::FILE* file = std::fopen("/proc/meminfo", "re");
  if (file == nullptr) return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof(line), file) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
  }
  std::fclose(file);
  return static_cast<std::size_t>(kib) * 1024;
}

using GetProcAddressV2 = PFN_cuGetProcAddress_v12000;
using GetProcAddressV1 = PFN_cuGetProcAddress_v11030;

// Opens the library and resolves every entry point, then cuInit(0). Throws
// DriverUnavailable saying what is missing and what to do about it.
CudaApi load_api(const std::string& path) {
  const std::string hint =
      " Install or repair the NVIDIA driver (libcuda.so.1 ships with the driver, not with the "
      "CUDA toolkit or PyTorch), make sure the dynamic loader finds it (ldconfig, "
      "LD_LIBRARY_PATH), or set TMS_DRIVER=sim to run on the host simulation.";
  dlerror();  // clear any stale message so the one we report is ours
  // Never dlclose'd: libcuda is not made to be unloaded, and the handle is
  // shared with the CUDA runtime through dlopen's reference count anyway.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    throw DriverUnavailable("cannot load the CUDA driver library '" + path + "': " + dl_error() +
                            "." + hint);
  }

  // cuda.h #defines cuGetProcAddress to cuGetProcAddress_v2 (CUDA 12.0+,
  // five arguments); older drivers only have the four-argument original.
  GetProcAddressV2 get_v2 =
      reinterpret_cast<GetProcAddressV2>(dlsym(handle, "cuGetProcAddress_v2"));
  GetProcAddressV1 get_v1 = nullptr;
  if (get_v2 == nullptr) {
    get_v1 = reinterpret_cast<GetProcAddressV1>(dlsym(handle, "cuGetProcAddress"));
    if (get_v1 == nullptr) {
      throw DriverUnavailable("the CUDA driver library '" + path + "' has no cuGetProcAddress (" +
                              dl_error() +
                              "); it is not libcuda or the driver is too old. torch_memory_saver "
                              "needs an NVIDIA driver for CUDA 12.0 or newer." +
                              hint);
    }
  }

  CudaApi api;
  const auto resolve = [&](const char* symbol) -> void* {
    void* function = nullptr;
    CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SUCCESS;
    const CUresult result =
        get_v2 != nullptr
            ? get_v2(symbol, &function, kCudaAbiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &found)
            : get_v1(symbol, &function, kCudaAbiVersion, CU_GET_PROC_ADDRESS_DEFAULT);
    if (result != CUDA_SUCCESS || function == nullptr || found != CU_GET_PROC_ADDRESS_SUCCESS) {
      const char* why = found == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                            ? "the driver is older than CUDA 12.0"
                            : "symbol not found";
      throw DriverUnavailable("the CUDA driver library '" + path + "' does not provide " + symbol +
                              " (cuGetProcAddress returned " + result_name(api, result) + ", " +
                              why +
                              "). torch_memory_saver needs an NVIDIA driver for CUDA 12.0 "
                              "or newer." +
                              hint);
    }
    return function;
  };
  // cuGetErrorName is in the list first, so later failures already get names.
#define TMS_CUDA_RESOLVE(name, version) \
  api.name##_ = reinterpret_cast<PFN_##name##_v##version>(resolve(#name));
  TMS_CUDA_SYMBOLS(TMS_CUDA_RESOLVE)
#undef TMS_CUDA_RESOLVE

  // Resolution at a pinned version can succeed on an older driver (each
  // symbol exists in some variant); the version says whether the semantics
  // we were written against are there.
  int driver_version = 0;
  if (api.cuDriverGetVersion_(&driver_version) == CUDA_SUCCESS &&
      driver_version < kCudaAbiVersion) {
    throw DriverUnavailable(
        "the CUDA driver at '" + path + "' supports CUDA " + std::to_string(driver_version / 1000) +
        "." + std::to_string(driver_version % 1000 / 10) +
        "; torch_memory_saver needs an NVIDIA driver for CUDA 12.0 or newer." + hint);
  }

  const CUresult init = api.cuInit_(0);
  if (init != CUDA_SUCCESS) {
    throw DriverUnavailable(
        "cuInit(0) failed with " + result_name(api, init) + " (driver library '" + path +
        "'): no usable GPU. Check that nvidia-smi lists a GPU, that CUDA_VISIBLE_DEVICES does not "
        "hide them all, and that the process was not forked after CUDA was initialized; or set "
        "TMS_DRIVER=sim to run on the host simulation.");
  }
  return api;
}

}  // namespace

struct CudaDriver::State {
  explicit State(std::string path) : library_path(std::move(path)) {}

  // The loaded API, or throws the load error; loads on the first call. The
  // outcome is kept either way, so a missing driver costs one dlopen, not one
  // per call.
  const CudaApi& api() {
    std::call_once(load_once, [this] {
      try {
        loaded = load_api(library_path);
        load_pid = getpid();
        load_ok = true;
      } catch (const std::exception& error) {
        load_error = error.what();
      } catch (...) {
        load_error = "loading the CUDA driver library '" + library_path + "' failed";
      }
    });
    if (!load_ok) throw DriverUnavailable(load_error);
    return loaded;
  }

  // The primary context of `device`, retained on first use and kept until the
  // driver object goes away.
  CUcontext primary_context(int device) {
    const CudaApi& cu = api();
    std::lock_guard lock(mutex);
    if (auto it = contexts.find(device); it != contexts.end()) return it->second.context;
    CUdevice handle = 0;
    TMS_CU_TRY(cu, cuDeviceGet, on_device(device), &handle, device);
    CUcontext context = nullptr;
    TMS_CU_TRY(cu, cuDevicePrimaryCtxRetain, on_device(device), &context, handle);
    contexts.emplace(device, Retained{handle, context});
    return context;
  }

  // A context for calls that name no device (VA reservations, handles,
  // host memory): none if the thread already has one (nullptr: leave it),
  // else a context we already retained, else device 0's.
  CUcontext any_context() {
    const CudaApi& cu = api();
    CUcontext current = nullptr;
    TMS_CU_TRY(cu, cuCtxGetCurrent, "", &current);
    if (current != nullptr) return nullptr;
    {
      std::lock_guard lock(mutex);
      if (!contexts.empty()) return contexts.begin()->second.context;
    }
    return primary_context(0);
  }

  struct Retained {
    CUdevice device;
    CUcontext context;
  };

  const std::string library_path;
  std::once_flag load_once;
  bool load_ok = false;  // written once inside call_once, read after it
  CudaApi loaded;
  std::string load_error;
  pid_t load_pid = 0;

  std::mutex mutex;                          // guards the two caches below
  std::map<int, Retained> contexts;          // device ordinal -> retained primary context
  std::map<int, std::size_t> granularities;  // device ordinal -> recommended granularity

  // The compressed-backup kernels of a device, loaded from the shipped PTX
  // on first use (the driver JIT-compiles it for the device).
  struct CodecKernels {
    CUmodule module = nullptr;
    CUfunction measure = nullptr;
    CUfunction encode = nullptr;
    CUfunction decode = nullptr;
  };
  std::mutex codec_mutex;                     // guards codec_kernels (loading may be slow)
  std::map<int, CodecKernels> codec_kernels;  // device ordinal -> its loaded module

  // The kernels of `device`, loaded on first use; the caller has made the
  // device's primary context current.
  CodecKernels& codec(const CudaApi& cu, int device) {
    std::lock_guard lock(codec_mutex);
    auto it = codec_kernels.find(device);
    if (it != codec_kernels.end()) return it->second;
    CodecKernels kernels;
    TMS_CU_TRY(cu, cuModuleLoadData, "compressed-backup kernels (PTX) on " + on_device(device),
               &kernels.module, codec::kCodecPtx);
    try {
      TMS_CU_TRY(cu, cuModuleGetFunction, codec::kMeasureKernel, &kernels.measure, kernels.module,
                 codec::kMeasureKernel);
      TMS_CU_TRY(cu, cuModuleGetFunction, codec::kEncodeKernel, &kernels.encode, kernels.module,
                 codec::kEncodeKernel);
      TMS_CU_TRY(cu, cuModuleGetFunction, codec::kDecodeKernel, &kernels.decode, kernels.module,
                 codec::kDecodeKernel);
    } catch (...) {
      cu.cuModuleUnload_(kernels.module);
      throw;
    }
    return codec_kernels.emplace(device, kernels).first->second;
  }
};

namespace {

// Makes `context` current on this thread for the guard's lifetime, pushing it
// only when another (or no) context is current. nullptr: leave things as they
// are.
class ScopedContext {
 public:
  ScopedContext(const CudaApi& api, CUcontext context) : api_(api) {
    if (context == nullptr) return;
    CUcontext current = nullptr;
    TMS_CU_TRY(api, cuCtxGetCurrent, "", &current);
    if (current == context) return;
    TMS_CU_TRY(api, cuCtxPushCurrent, "", context);
    pushed_ = true;
  }
  ~ScopedContext() {
    // A destructor cannot throw; a failed pop leaves the context current on
    // this thread, which is harmless (it is the primary context).
    if (pushed_) {
      CUcontext popped = nullptr;
      api_.cuCtxPopCurrent_(&popped);
    }
  }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  const CudaApi& api_;
  bool pushed_ = false;
};

CUmemAllocationProp device_allocation(int device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

CUstream to_stream(StreamHandle stream) { return static_cast<CUstream>(stream); }

}  // namespace

CudaDriver::CudaDriver(std::string library_path)
    : state_(std::make_unique<State>(std::move(library_path))) {}

CudaDriver::~CudaDriver() {
  // Only when loading succeeded, and not in a forked child: the parent's
  // contexts are not usable there. Errors are ignored (e.g. the driver may
  // already be shut down when this runs at process exit).
  if (!state_->load_ok || state_->load_pid != getpid()) return;
  for (const auto& [ordinal, kernels] : state_->codec_kernels) {
    state_->loaded.cuModuleUnload_(kernels.module);
  }
  for (const auto& [ordinal, retained] : state_->contexts) {
    state_->loaded.cuDevicePrimaryCtxRelease_(retained.device);
  }
}

const std::string& CudaDriver::library_path() const noexcept { return state_->library_path; }

void CudaDriver::load() { (void)state_->api(); }

int CudaDriver::device_count() {
  const CudaApi& cu = state_->api();
  int count = 0;
  TMS_CU_TRY(cu, cuDeviceGetCount, "", &count);
  return count;
}

int CudaDriver::current_device() {
  const CudaApi& cu = state_->api();
  CUcontext current = nullptr;
  TMS_CU_TRY(cu, cuCtxGetCurrent, "", &current);
  if (current == nullptr) return 0;
  CUdevice device = 0;
  TMS_CU_TRY(cu, cuCtxGetDevice, "", &device);
  return static_cast<int>(device);
}

std::size_t CudaDriver::granularity(int device) {
  {
    std::lock_guard lock(state_->mutex);
    if (auto it = state_->granularities.find(device); it != state_->granularities.end()) {
      return it->second;
    }
  }
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  const CUmemAllocationProp prop = device_allocation(device);
  std::size_t value = 0;
  TMS_CU_TRY(cu, cuMemGetAllocationGranularity, on_device(device), &value, &prop,
             CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
  std::lock_guard lock(state_->mutex);
  state_->granularities.emplace(device, value);  // a racing thread stored the same value
  return value;
}

DeviceMemoryInfo CudaDriver::memory_info(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  DeviceMemoryInfo info;
  TMS_CU_TRY(cu, cuMemGetInfo, on_device(device), &info.free_bytes, &info.total_bytes);
  return info;
}

void CudaDriver::synchronize(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuCtxSynchronize, on_device(device));
}

bool CudaDriver::capture_underway(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  // Asking the legacy stream is safe while another stream captures: a
  // capture on a blocking stream of the device makes it answer
  // CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, without invalidating that capture.
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  const CUresult result = cu.cuStreamIsCapturing_(CU_STREAM_LEGACY, &status);
  if (result == CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) return true;
  if (result != CUDA_SUCCESS)
    throw_cuda_error(cu, "cuStreamIsCapturing", result, on_device(device));
  return status != CU_STREAM_CAPTURE_STATUS_NONE;
}

DevicePtr CudaDriver::reserve(std::size_t size, std::size_t alignment) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  CUdeviceptr va = 0;
  const CUresult result = cu.cuMemAddressReserve_(&va, size, alignment, 0, 0);
  if (result == CUDA_SUCCESS) [[likely]]
    return static_cast<DevicePtr>(va);
  const std::string request =
      "size " + describe_bytes(size) + ", alignment " + std::to_string(alignment);
  // The driver found no free virtual range this large: the caller asked for
  // more than the address space holds. Out of memory (what an allocator's
  // caller handles), not a driver failure; the device may have memory free.
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    throw OutOfMemory("cuMemAddressReserve",
                      "cuMemAddressReserve failed with CUDA_ERROR_OUT_OF_MEMORY: no free virtual "
                      "address range for " +
                          request + ": the address space ran out, not device memory",
                      size, 0);
  }
  throw_cuda_error(cu, "cuMemAddressReserve", result, request);
}

void CudaDriver::free_reservation(DevicePtr va, std::size_t size) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemAddressFree, range(va, size), static_cast<CUdeviceptr>(va), size);
}

PhysicalHandle CudaDriver::create_physical(int device, std::size_t size) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  const CUmemAllocationProp prop = device_allocation(device);
  CUmemGenericAllocationHandle handle = 0;
  const CUresult result = cu.cuMemCreate_(&handle, size, &prop, 0);
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    const bool known = cu.cuMemGetInfo_(&free_bytes, &total_bytes) == CUDA_SUCCESS;
    throw OutOfMemory("cuMemCreate",
                      "cuMemCreate failed with CUDA_ERROR_OUT_OF_MEMORY: " + on_device(device) +
                          " needed " + describe_bytes(size) + ", free " +
                          (known ? describe_bytes(free_bytes) : std::string("unknown")),
                      size, free_bytes);
  }
  if (result != CUDA_SUCCESS) {
    throw_cuda_error(cu, "cuMemCreate", result,
                     on_device(device) + ", size " + describe_bytes(size));
  }
  return static_cast<PhysicalHandle>(handle);
}

void CudaDriver::release_physical(PhysicalHandle handle) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemRelease, "handle " + hex_address(handle),
             static_cast<CUmemGenericAllocationHandle>(handle));
}

void CudaDriver::map(DevicePtr va, std::size_t size, PhysicalHandle handle) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemMap, range(va, size) + ", handle " + hex_address(handle),
             static_cast<CUdeviceptr>(va), size, 0,
             static_cast<CUmemGenericAllocationHandle>(handle), 0);
}

void CudaDriver::unmap(DevicePtr va, std::size_t size) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemUnmap, range(va, size), static_cast<CUdeviceptr>(va), size);
}

void CudaDriver::set_access(DevicePtr va, std::size_t size, int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  TMS_CU_TRY(cu, cuMemSetAccess, range(va, size) + ", " + on_device(device),
             static_cast<CUdeviceptr>(va), size, &access, 1);
}

void* CudaDriver::host_alloc(std::size_t size) {
  if (size == 0) throw InvalidArgument("host_alloc: size must not be 0");
  // Plain anonymous memory needs no driver: it is page-locked later, in
  // chunks, through host_register (cuMemHostAlloc would cost ~4 s per 8 GiB).
  void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ptr == MAP_FAILED) {
    const int error = errno;
    const std::size_t available = host_available_bytes();
    throw OutOfMemory("mmap",
                      std::string("mmap of host backup memory failed: ") + std::strerror(error) +
                          "; needed " + describe_bytes(size) + ", available " +
                          describe_bytes(available),
                      size, available);
  }
  // Huge pages make the later copies and cuMemHostRegister much faster;
  // without THP support the memory still works, so failure is ignored.
  (void)madvise(ptr, size, MADV_HUGEPAGE);
  return ptr;
}

void CudaDriver::host_free(void* ptr, std::size_t size) {
  if (ptr == nullptr) return;
  if (munmap(ptr, size) != 0) {
    const int error = errno;
    throw DriverError("munmap", std::strerror(error),
                      range(reinterpret_cast<std::uintptr_t>(ptr), size));
  }
}

void CudaDriver::host_register(void* ptr, std::size_t size) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemHostRegister, "host " + range(reinterpret_cast<std::uintptr_t>(ptr), size),
             ptr, size, CU_MEMHOSTREGISTER_PORTABLE);
}

void CudaDriver::host_unregister(void* ptr) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuMemHostUnregister,
             "host ptr " + hex_address(reinterpret_cast<std::uintptr_t>(ptr)), ptr);
}

StreamHandle CudaDriver::create_stream(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  CUstream stream = nullptr;
  TMS_CU_TRY(cu, cuStreamCreate, on_device(device), &stream, CU_STREAM_NON_BLOCKING);
  return stream;
}

void CudaDriver::destroy_stream(int device, StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuStreamDestroy, on_device(device), to_stream(stream));
}

void CudaDriver::copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                                    StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuMemcpyDtoHAsync,
             on_device(device) + ", " + range(src, size) + " -> host " +
                 hex_address(reinterpret_cast<std::uintptr_t>(dst)),
             dst, static_cast<CUdeviceptr>(src), size, to_stream(stream));
}

void CudaDriver::copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                                      StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuMemcpyHtoDAsync,
             on_device(device) + ", host " + hex_address(reinterpret_cast<std::uintptr_t>(src)) +
                 " -> " + range(dst, size),
             static_cast<CUdeviceptr>(dst), src, size, to_stream(stream));
}

void CudaDriver::synchronize_stream(int device, StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuStreamSynchronize, on_device(device), to_stream(stream));
}

// ---- events ------------------------------------------------------------------

namespace {
CUevent to_event(EventHandle event) { return static_cast<CUevent>(event); }
}  // namespace

EventHandle CudaDriver::create_event(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  CUevent event = nullptr;
  // Blocking sync: the thread that waits for a restore behind a
  // non-blocking resume sleeps instead of spinning a core for its length.
  TMS_CU_TRY(cu, cuEventCreate, on_device(device), &event,
             CU_EVENT_DISABLE_TIMING | CU_EVENT_BLOCKING_SYNC);
  return event;
}

void CudaDriver::destroy_event(int device, EventHandle event) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuEventDestroy, on_device(device), to_event(event));
}

void CudaDriver::record_event(int device, EventHandle event, StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuEventRecord, on_device(device), to_event(event), to_stream(stream));
}

void CudaDriver::synchronize_event(int device, EventHandle event) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  TMS_CU_TRY(cu, cuEventSynchronize, on_device(device), to_event(event));
}

void CudaDriver::stream_wait_event(int device, StreamHandle stream, EventHandle event) {
  const CudaApi& cu = state_->api();
  // The caller's context where it has one: a null stream is the legacy
  // stream of that context, the one the caller's own work runs on.
  ScopedContext guard(cu, state_->any_context());
  TMS_CU_TRY(cu, cuStreamWaitEvent, "event of " + on_device(device), to_stream(stream),
             to_event(event), 0);
}

// ---- compressed-backup kernels ----------------------------------------------

void CudaDriver::codec_prepare(int device) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  (void)state_->codec(cu, device);
}

namespace {

// Launches `function` with one block per chunk of `size` input bytes.
template <typename... Args>
void launch_codec(const CudaApi& cu, CUfunction function, const char* kernel, int device,
                  std::size_t size, StreamHandle stream, Args... args) {
  void* params[] = {static_cast<void*>(&args)...};
  const unsigned blocks = codec::chunk_count(size);
  TMS_CU_TRY(cu, cuLaunchKernel,
             std::string(kernel) + " on " + on_device(device) + ", " + describe_bytes(size),
             function, blocks, 1, 1, codec::kKernelThreads, 1, 1, 0, to_stream(stream), params,
             nullptr);
}

}  // namespace

void CudaDriver::codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                                     StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  launch_codec(cu, state_->codec(cu, device).measure, codec::kMeasureKernel, device, size, stream,
               static_cast<CUdeviceptr>(src), static_cast<std::uint64_t>(size),
               static_cast<CUdeviceptr>(sizes));
}

void CudaDriver::codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                                    DevicePtr dst, StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  launch_codec(cu, state_->codec(cu, device).encode, codec::kEncodeKernel, device, size, stream,
               static_cast<CUdeviceptr>(src), static_cast<std::uint64_t>(size),
               static_cast<CUdeviceptr>(sizes), static_cast<CUdeviceptr>(dst));
}

void CudaDriver::codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                                    StreamHandle stream) {
  const CudaApi& cu = state_->api();
  ScopedContext guard(cu, state_->primary_context(device));
  launch_codec(cu, state_->codec(cu, device).decode, codec::kDecodeKernel, device, size, stream,
               static_cast<CUdeviceptr>(stored), static_cast<CUdeviceptr>(dst),
               static_cast<std::uint64_t>(size));
}

}  // namespace tms
