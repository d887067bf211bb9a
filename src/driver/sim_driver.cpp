#include "driver/sim_driver.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "codec/cpu_codec.h"
#include "common/errors.h"
#include "common/sizes.h"

namespace tms {
namespace {

// Each thread has its own current device, as with the CUDA runtime.
thread_local int t_current_device = 0;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// What a reservation the process has no room for raises: its size, and that
// the address space ran out (the device may have plenty of memory free).
OutOfMemory address_space_exhausted(std::size_t size, std::size_t alignment,
                                    const std::string& cause) {
  return OutOfMemory("sim.reserve",
                     "no free virtual address range of " + describe_bytes(size) + " (alignment " +
                         describe_bytes(alignment) +
                         "): the address space ran out, not device memory (" + cause + ")",
                     size, 0);
}

}  // namespace

SimDriver::SimDriver(SimDriverOptions options)
    : options_(options),
      physical_bytes_(static_cast<std::size_t>(options.device_count), 0),
      capturing_(static_cast<std::size_t>(options.device_count), false) {
  if (options_.device_count < 1) throw InvalidArgument("SimDriver needs at least one device");
  if (options_.granularity == 0 ||
      (options_.granularity % static_cast<std::size_t>(getpagesize())) != 0) {
    throw InvalidArgument("SimDriver granularity must be a positive multiple of the page size");
  }
}

SimDriver::~SimDriver() {
  // Whatever the engine leaked is returned here so a test process stays clean;
  // tests assert on the accounting before this point.
  for (auto& [handle, physical] : physical_) close(physical.fd);
  for (auto& [va, size] : reservations_) munmap(reinterpret_cast<void*>(va), size);
  for (auto& [ptr, size] : host_allocations_) munmap(ptr, size);
}

void SimDriver::check_device(int device, std::string_view call) const {
  if (device < 0 || device >= options_.device_count) {
    throw DriverError(
        "sim." + std::string(call), "CUDA_ERROR_INVALID_DEVICE",
        "device " + std::to_string(device) + " of " + std::to_string(options_.device_count));
  }
}

SimDriver::Physical& SimDriver::physical_or_throw(PhysicalHandle handle, std::string_view call) {
  auto it = physical_.find(handle);
  if (it == physical_.end()) {
    throw DriverError("sim." + std::string(call), "CUDA_ERROR_INVALID_HANDLE",
                      "unknown physical handle " + std::to_string(handle));
  }
  return it->second;
}

int SimDriver::device_count() { return options_.device_count; }

int SimDriver::current_device() { return t_current_device; }

void SimDriver::set_current_device(int device) {
  check_device(device, "set_current_device");
  t_current_device = device;
}

void SimDriver::set_capturing(int device, bool capturing) {
  std::lock_guard lock(mutex_);
  check_device(device, "set_capturing");
  capturing_[static_cast<std::size_t>(device)] = capturing;
}

bool SimDriver::capture_underway(int device) {
  std::lock_guard lock(mutex_);
  check_device(device, "capture_underway");
  return capturing_[static_cast<std::size_t>(device)];
}

std::size_t SimDriver::granularity(int device) {
  check_device(device, "granularity");
  return options_.granularity;
}

DeviceMemoryInfo SimDriver::memory_info(int device) {
  std::lock_guard lock(mutex_);
  check_device(device, "memory_info");
  const std::size_t used = physical_bytes_[static_cast<std::size_t>(device)];
  const std::size_t total = options_.capacity_bytes;
  return {used < total ? total - used : 0, total};
}

void SimDriver::synchronize(int device) {
  {
    std::lock_guard lock(mutex_);
    check_device(device, "synchronize");
  }
  run_deferred(nullptr);
}

DevicePtr SimDriver::reserve(std::size_t size, std::size_t alignment) {
  std::lock_guard lock(mutex_);
  if (size == 0 || size % options_.granularity != 0) {
    throw DriverError("sim.reserve", "CUDA_ERROR_INVALID_VALUE",
                      "size " + std::to_string(size) + " is not a granularity multiple");
  }
  // Over-reserve so the range can be aligned, then trim both ends.
  const std::size_t align = alignment > options_.granularity ? alignment : options_.granularity;
  // Like cuMemAddressReserve's CUDA_ERROR_OUT_OF_MEMORY, a range the process
  // cannot hold is out of (address space) memory, not a driver failure: the
  // caller asked for too much and should hear so.
  if (size > SIZE_MAX - align)
    throw address_space_exhausted(size, align, "with its alignment it exceeds 2^64 bytes");
  const std::size_t span = size + align;
  void* raw = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    if (errno == ENOMEM) throw address_space_exhausted(size, align, errno_text("mmap"));
    throw DriverError("sim.reserve", "CUDA_ERROR_UNKNOWN", errno_text("mmap"));
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = round_up(begin, align);
  if (aligned > begin) munmap(raw, aligned - begin);
  const std::uintptr_t end = begin + span;
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  reservations_.emplace(aligned, size);
  return aligned;
}

void SimDriver::free_reservation(DevicePtr va, std::size_t size) {
  std::lock_guard lock(mutex_);
  auto it = reservations_.find(va);
  if (it == reservations_.end() || it->second != size) {
    throw DriverError("sim.free_reservation", "CUDA_ERROR_INVALID_VALUE", "not a reservation");
  }
  for (const auto& [mapped_va, mapped_size] : mappings_) {
    if (mapped_va >= va && mapped_va < va + size) {
      throw DriverError("sim.free_reservation", "CUDA_ERROR_INVALID_VALUE",
                        "range still has mappings");
    }
  }
  munmap(reinterpret_cast<void*>(va), size);
  reservations_.erase(it);
}

PhysicalHandle SimDriver::create_physical(int device, std::size_t size) {
  std::lock_guard lock(mutex_);
  check_device(device, "create_physical");
  auto& used = physical_bytes_[static_cast<std::size_t>(device)];
  // The capacity may have been lowered below what is in use.
  const std::size_t free_bytes =
      used < options_.capacity_bytes ? options_.capacity_bytes - used : 0;
  if (size > free_bytes) {
    throw OutOfMemory(
        "sim.create_physical",
        "device " + std::to_string(device) + " has " + describe_bytes(free_bytes) + " free", size,
        free_bytes);
  }
  // The system call, not glibc's memfd_create() wrapper (glibc 2.27+): the
  // portable wheel targets glibc 2.17.
  const int fd = static_cast<int>(syscall(SYS_memfd_create, "tms-sim-physical", MFD_CLOEXEC));
  if (fd < 0)
    throw DriverError("sim.create_physical", "CUDA_ERROR_UNKNOWN", errno_text("memfd_create"));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const std::string text = errno_text("ftruncate");
    close(fd);
    throw DriverError("sim.create_physical", "CUDA_ERROR_UNKNOWN", text);
  }
  used += size;
  const PhysicalHandle handle = next_handle_++;
  physical_.emplace(handle, Physical{fd, device, size});
  return handle;
}

void SimDriver::release_physical(PhysicalHandle handle) {
  std::lock_guard lock(mutex_);
  Physical& physical = physical_or_throw(handle, "release_physical");
  // As with cuMemRelease, memory still mapped stays alive until unmapped; the
  // engine always unmaps first, so the simulation frees it at once.
  close(physical.fd);
  physical_bytes_[static_cast<std::size_t>(physical.device)] -= physical.size;
  physical_.erase(handle);
}

void SimDriver::map(DevicePtr va, std::size_t size, PhysicalHandle handle) {
  std::lock_guard lock(mutex_);
  Physical& physical = physical_or_throw(handle, "map");
  if (size > physical.size) {
    throw DriverError("sim.map", "CUDA_ERROR_INVALID_VALUE", "range larger than the handle");
  }
  if (mappings_.count(va) != 0) {
    throw DriverError("sim.map", "CUDA_ERROR_ALREADY_MAPPED", "range is already mapped");
  }
  // Mapped but not yet accessible, as with cuMemMap before cuMemSetAccess.
  void* result =
      mmap(reinterpret_cast<void*>(va), size, PROT_NONE, MAP_FIXED | MAP_SHARED, physical.fd, 0);
  if (result == MAP_FAILED) throw DriverError("sim.map", "CUDA_ERROR_UNKNOWN", errno_text("mmap"));
  mappings_.emplace(va, size);
}

void SimDriver::unmap(DevicePtr va, std::size_t size) {
  std::lock_guard lock(mutex_);
  auto it = mappings_.find(va);
  if (it == mappings_.end() || it->second != size) {
    throw DriverError("sim.unmap", "CUDA_ERROR_INVALID_VALUE", "range is not mapped");
  }
  // Back to an inaccessible reservation: touching it faults, like a kernel
  // touching an unmapped device range.
  void* result = mmap(reinterpret_cast<void*>(va), size, PROT_NONE,
                      MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (result == MAP_FAILED)
    throw DriverError("sim.unmap", "CUDA_ERROR_UNKNOWN", errno_text("mmap"));
  mappings_.erase(it);
  accessible_.erase(va);
}

void SimDriver::set_access(DevicePtr va, std::size_t size, int device) {
  std::lock_guard lock(mutex_);
  check_device(device, "set_access");
  const auto mapping = mappings_.find(va);
  if (mapping == mappings_.end() || mapping->second != size) {
    throw DriverError("sim.set_access", "CUDA_ERROR_INVALID_VALUE", "range is not mapped");
  }
  if (mprotect(reinterpret_cast<void*>(va), size, PROT_READ | PROT_WRITE) != 0) {
    throw DriverError("sim.set_access", "CUDA_ERROR_INVALID_VALUE", errno_text("mprotect"));
  }
  accessible_[va] = size;
}

void* SimDriver::host_alloc(std::size_t size) {
  std::lock_guard lock(mutex_);
  void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ptr == MAP_FAILED) {
    throw OutOfMemory("sim.host_alloc", errno_text("mmap"), size, 0);
  }
  host_allocations_.emplace(ptr, size);
  return ptr;
}

void SimDriver::host_free(void* ptr, std::size_t size) {
  std::lock_guard lock(mutex_);
  // The allocation holding [ptr, ptr + size): all of it, or (as munmap
  // allows) a page-aligned piece of it.
  const auto begin = reinterpret_cast<std::uintptr_t>(ptr);
  auto it = host_allocations_.upper_bound(ptr);
  if (it == host_allocations_.begin()) {
    throw DriverError("sim.host_free", "CUDA_ERROR_INVALID_VALUE", "not a host allocation");
  }
  --it;
  const auto start = reinterpret_cast<std::uintptr_t>(it->first);
  const std::size_t length = it->second;
  const bool whole = begin == start && size == length;
  const bool piece = size > 0 && begin >= start && begin - start < length &&
                     size <= length - (begin - start) &&
                     begin % static_cast<std::uintptr_t>(getpagesize()) == 0 &&
                     size % static_cast<std::size_t>(getpagesize()) == 0;
  if (!whole && !piece) {
    throw DriverError("sim.host_free", "CUDA_ERROR_INVALID_VALUE", "not a host allocation");
  }
  munmap(ptr, size);
  host_allocations_.erase(it);
  // What is left on either side stays allocated.
  if (begin > start) host_allocations_.emplace(reinterpret_cast<void*>(start), begin - start);
  const std::uintptr_t end = begin + size;
  if (end < start + length)
    host_allocations_.emplace(reinterpret_cast<void*>(end), start + length - end);
}

void SimDriver::host_register(void* ptr, std::size_t size) {
  std::lock_guard lock(mutex_);
  if (!host_registrations_.emplace(ptr, size).second) {
    throw DriverError("sim.host_register", "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED", "");
  }
}

void SimDriver::host_unregister(void* ptr) {
  std::lock_guard lock(mutex_);
  if (host_registrations_.erase(ptr) == 0) {
    throw DriverError("sim.host_unregister", "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED", "");
  }
}

StreamHandle SimDriver::create_stream(int device) {
  std::lock_guard lock(mutex_);
  check_device(device, "create_stream");
  ++live_streams_;
  return reinterpret_cast<StreamHandle>(next_stream_++);
}

void SimDriver::destroy_stream(int device, StreamHandle stream) {
  run_deferred(stream);  // as cuStreamDestroy: queued work still completes
  std::lock_guard lock(mutex_);
  check_device(device, "destroy_stream");
  --live_streams_;
}

void SimDriver::copy_or_defer(StreamHandle stream, std::function<void()> copy) {
  {
    std::lock_guard lock(mutex_);
    if (copies_deferred_) {
      deferred_[stream].push_back(std::move(copy));
      return;
    }
  }
  // Copies of different allocations run in parallel, as on a GPU.
  copy();
}

void SimDriver::run_deferred(StreamHandle stream) {
  // One runner at a time: a synchronization must not return while copies
  // queued before it are still being made by another thread's.
  std::lock_guard running(deferred_runner_);
  std::vector<std::function<void()>> queued;
  {
    std::lock_guard lock(mutex_);
    if (stream != nullptr) {
      if (auto it = deferred_.find(stream); it != deferred_.end()) queued = std::move(it->second);
      deferred_.erase(stream);
    } else {
      for (auto& [each, copies] : deferred_) {
        for (auto& copy : copies) queued.push_back(std::move(copy));
      }
      deferred_.clear();
    }
  }
  for (const auto& copy : queued) copy();
}

void SimDriver::copy_to_host_async(int device, void* dst, DevicePtr src, std::size_t size,
                                   StreamHandle stream) {
  check_device(device, "copy_to_host");  // device_count never changes: no lock
  copy_or_defer(stream, [=] { std::memcpy(dst, reinterpret_cast<const void*>(src), size); });
}

void SimDriver::copy_to_device_async(int device, DevicePtr dst, const void* src, std::size_t size,
                                     StreamHandle stream) {
  check_device(device, "copy_to_device");  // device_count never changes: no lock
  copy_or_defer(stream, [=] { std::memcpy(reinterpret_cast<void*>(dst), src, size); });
}

void SimDriver::synchronize_stream(int device, StreamHandle stream) {
  {
    std::lock_guard lock(mutex_);
    check_device(device, "synchronize_stream");
  }
  run_deferred(stream);
}

EventHandle SimDriver::create_event(int device) {
  std::lock_guard lock(mutex_);
  check_device(device, "create_event");
  auto* event = reinterpret_cast<EventHandle>(next_event_++);
  events_.emplace(event, nullptr);
  return event;
}

void SimDriver::destroy_event(int device, EventHandle event) {
  std::lock_guard lock(mutex_);
  check_device(device, "destroy_event");
  if (events_.erase(event) == 0) {
    throw DriverError("sim.destroy_event", "CUDA_ERROR_INVALID_HANDLE", "unknown event");
  }
}

void SimDriver::record_event(int device, EventHandle event, StreamHandle stream) {
  std::lock_guard lock(mutex_);
  check_device(device, "record_event");
  auto it = events_.find(event);
  if (it == events_.end()) {
    throw DriverError("sim.record_event", "CUDA_ERROR_INVALID_HANDLE", "unknown event");
  }
  it->second = stream;
}

void SimDriver::synchronize_event(int device, EventHandle event) {
  StreamHandle stream = nullptr;
  {
    std::unique_lock lock(mutex_);
    check_device(device, "synchronize_event");
    event_waits_released_.wait(lock, [&] { return !event_waits_held_; });
    auto it = events_.find(event);
    if (it == events_.end()) {
      throw DriverError("sim.synchronize_event", "CUDA_ERROR_INVALID_HANDLE", "unknown event");
    }
    stream = it->second;
  }
  // Runs what was queued after the mark too: in the sim that only makes
  // copies happen sooner than a GPU might.
  if (stream != nullptr) run_deferred(stream);
}

void SimDriver::stream_wait_event(int device, StreamHandle /*stream*/, EventHandle event) {
  // Nothing of the caller's runs in the sim: the marked copies run now, so
  // whatever the caller does next sees them done.
  synchronize_event(device, event);
}

void SimDriver::hold_event_waits(bool held) {
  {
    std::lock_guard lock(mutex_);
    event_waits_held_ = held;
  }
  event_waits_released_.notify_all();
}

void SimDriver::set_copies_deferred(bool deferred) {
  std::lock_guard lock(mutex_);
  copies_deferred_ = deferred;
}

std::size_t SimDriver::deferred_copies() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [stream, copies] : deferred_) total += copies.size();
  return total;
}

std::size_t SimDriver::live_events() const {
  std::lock_guard lock(mutex_);
  return events_.size();
}

std::size_t SimDriver::accessible_bytes() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [va, size] : accessible_) total += size;
  return total;
}

void SimDriver::set_capacity(std::size_t bytes_per_device) {
  std::lock_guard lock(mutex_);
  options_.capacity_bytes = bytes_per_device;
}

std::size_t SimDriver::physical_bytes(int device) const {
  std::lock_guard lock(mutex_);
  check_device(device, "physical_bytes");
  return physical_bytes_[static_cast<std::size_t>(device)];
}

std::vector<std::size_t> SimDriver::physical_bytes_per_device() const {
  std::lock_guard lock(mutex_);
  return physical_bytes_;
}

std::size_t SimDriver::reserved_bytes() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [va, size] : reservations_) total += size;
  return total;
}

std::size_t SimDriver::mapped_bytes() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [va, size] : mappings_) total += size;
  return total;
}

std::size_t SimDriver::host_bytes() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [ptr, size] : host_allocations_) total += size;
  return total;
}

std::size_t SimDriver::live_streams() const {
  std::lock_guard lock(mutex_);
  return live_streams_;
}

std::size_t SimDriver::registered_host_ranges() const {
  std::lock_guard lock(mutex_);
  return host_registrations_.size();
}

// The codec "kernels" run the CPU reference codec on the simulated device
// memory (host memory at the device addresses), outside the lock like copies.
void SimDriver::codec_measure_async(int device, DevicePtr src, std::size_t size, DevicePtr sizes,
                                    StreamHandle stream) {
  check_device(device, "codec_measure");  // device_count never changes: no lock
  run_deferred(stream);                   // the copies queued before it on its stream come first
  codec::measure(reinterpret_cast<const std::uint8_t*>(src), size,
                 reinterpret_cast<std::uint32_t*>(sizes));
}

void SimDriver::codec_encode_async(int device, DevicePtr src, std::size_t size, DevicePtr /*sizes*/,
                                   DevicePtr dst, StreamHandle stream) {
  check_device(device, "codec_encode");  // device_count never changes: no lock
  run_deferred(stream);
  codec::encode_batch(reinterpret_cast<const std::uint8_t*>(src), size,
                      reinterpret_cast<std::uint8_t*>(dst));
}

void SimDriver::codec_decode_async(int device, DevicePtr stored, DevicePtr dst, std::size_t size,
                                   StreamHandle stream) {
  check_device(device, "codec_decode");  // device_count never changes: no lock
  run_deferred(stream);
  // The batch's stored length is what its size table says (format.h).
  const auto* head = reinterpret_cast<const std::uint8_t*>(stored);
  codec::decode_batch(head, codec::stored_batch_bytes(head, size),
                      reinterpret_cast<std::uint8_t*>(dst), size);
}

}  // namespace tms
