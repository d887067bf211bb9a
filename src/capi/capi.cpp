// extern "C" entry points (include/torch_memory_saver/tms.h). Each one runs
// its body through call_guarded(), which turns every exception into a status
// and the calling thread's error message: nothing escapes into C, Python or
// a CUDA runtime caller.
#include <cstdint>
#include <exception>
#include <iterator>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include "backup/backup_directory.h"
#include "capi/region_policy.h"
#include "capi/runtime.h"
#include "common/errors.h"
#include "common/log.h"
#include "driver/fault_injecting_driver.h"
#include "driver/sim_driver.h"
#include "torch_memory_saver/tms.h"
#include "torch_memory_saver/tms_testing.h"

namespace tms {
namespace {

// Reported when not even the thread's state could be made.
constexpr const char* kNoHostMemory = "host memory exhausted";

// The name of each status, indexed by its value (tms.h's TMS_STATUS_LIST).
#define TMS_STATUS_NAME(name, value, meaning) #name,
constexpr const char* kStatusNames[] = {TMS_STATUS_LIST(TMS_STATUS_NAME)};
#undef TMS_STATUS_NAME
// The values are 0, 1, 2, ... in list order, so a status is its own index.
#define TMS_STATUS_AT_ITS_INDEX(name, value, meaning) \
  static_assert(std::string_view(kStatusNames[value]) == #name);
TMS_STATUS_LIST(TMS_STATUS_AT_ITS_INDEX)
#undef TMS_STATUS_AT_ITS_INDEX

int fail(int status, const char* message) noexcept {
  if (ThreadState* state = thread_state()) {
    state->error_status = status;
    try {
      state->error_message = message;
    } catch (...) {
      state->error_message.clear();  // tms_last_error() says kNoHostMemory
    }
  }
  return status;
}

// What an entry point needs. In a fork()ed child, calls that need the engine
// are refused before anything is allocated: the parent's other threads may
// have held an allocator's lock at the fork, which glibc's malloc recovers
// from but other allocators (sanitizers' among them) may not.
enum class Needs { kEngine, kNoEngine };

template <Needs needs = Needs::kEngine, typename Body>
int call_guarded(Body&& body) noexcept {
  if (needs == Needs::kEngine && in_forked_child()) return TMS_ERROR_INVALID_STATE;
  try {
    ThreadState* state = thread_state();
    if (state == nullptr) return fail(TMS_ERROR_OUT_OF_MEMORY, kNoHostMemory);
    state->error_status = TMS_OK;
    state->error_message.clear();
    body();
    return TMS_OK;
  } catch (const Error& error) {
    return fail(error.status(), error.what());
  } catch (const std::bad_alloc&) {
    return fail(TMS_ERROR_OUT_OF_MEMORY, "host memory exhausted (std::bad_alloc)");
  } catch (const std::exception& error) {
    return fail(TMS_ERROR_INTERNAL, (std::string("internal error: ") + error.what()).c_str());
  } catch (...) {
    return fail(TMS_ERROR_INTERNAL, "internal error: unknown exception");
  }
}

std::string require_text(const char* text, const char* what) {
  if (text == nullptr) throw InvalidArgument(std::string(what) + " must not be NULL");
  return text;
}

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or
// code points past U+10FFFF).
bool is_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2, code = lead & 0x1fu;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3, code = lead & 0x0fu;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4, code = lead & 0x07u;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0u) != 0x80u) return false;
      code = (code << 6) | (next & 0x3fu);
    }
    const std::uint32_t smallest = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    if (code < smallest || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += length;
  }
  return true;
}

// Tags come back to callers (tms_get_current_tag, stats JSON, messages) as
// text, so they must be UTF-8.
std::string require_tag(const char* tag) {
  std::string text = require_text(tag, "tag");
  if (!is_utf8(text)) throw InvalidArgument("tag must be UTF-8 text");
  return text;
}

std::optional<std::string> optional_tag(const char* tag) {
  return tag == nullptr ? std::nullopt : std::optional<std::string>(require_tag(tag));
}

ThreadRegion& thread_region_or_throw() {
  ThreadState* state = thread_state();
  if (state == nullptr) throw std::bad_alloc();
  return state->region;
}

// The calling thread's settings for the getters, which cannot fail.
const ThreadRegion& thread_region_or_defaults() noexcept {
  static const ThreadRegion defaults;
  const ThreadState* state = thread_state();
  return state != nullptr ? state->region : defaults;
}

AllocationRequest request_from_thread(std::size_t size, int device) {
  const ThreadRegion& region = thread_region_or_throw();
  AllocationRequest request;
  request.size = size;
  request.device = device;
  request.tag = region.tag;
  request.policy = region.policy;
  return request;
}

SimDriver& sim_driver_or_throw() {
  Runtime& rt = runtime();
  if (rt.sim == nullptr) {
    throw InvalidState("simulated driver controls need TMS_DRIVER=sim (running on " +
                       std::string(rt.driver->name()) + ")");
  }
  return *rt.sim;
}

}  // namespace
}  // namespace tms

using namespace tms;

extern "C" {

const char* tms_last_error(void) {
  if (in_forked_child()) return kForkedChildMessage;  // see call_guarded
  const ThreadState* state = thread_state();
  if (state == nullptr) return kNoHostMemory;
  if (state->error_status != TMS_OK && state->error_message.empty()) return kNoHostMemory;
  return state->error_message.c_str();
}

int tms_last_status(void) {
  if (in_forked_child()) return TMS_ERROR_INVALID_STATE;  // see call_guarded
  const ThreadState* state = thread_state();
  return state != nullptr ? state->error_status : TMS_ERROR_OUT_OF_MEMORY;
}

const char* tms_status_name(int status) {
  if (status < 0 || status >= tms_status_count()) return "TMS_ERROR_UNKNOWN_STATUS";
  return kStatusNames[status];
}

int tms_status_count(void) { return static_cast<int>(std::size(kStatusNames)); }

const char* tms_version(void) { return TMS_VERSION_STRING; }

int tms_init(void) {
  return call_guarded([] { (void)runtime(); });
}

const char* tms_driver_name(void) {
  const char* name = nullptr;
  call_guarded([&] { name = runtime().driver->name().data(); });
  return name;
}

// ---- per-thread region settings ----

int tms_set_interesting_region(bool is_interesting) {
  return call_guarded([&] { thread_region_or_throw().interesting = is_interesting; });
}

bool tms_get_interesting_region(void) { return thread_region_or_defaults().interesting; }

int tms_set_current_tag(const char* tag) {
  return call_guarded([&] { thread_region_or_throw().tag = require_tag(tag); });
}

const char* tms_get_current_tag(void) { return thread_region_or_defaults().tag.c_str(); }

int tms_set_backup_policy(const tms_backup_policy* policy) {
  return call_guarded([&] {
    if (policy == nullptr) throw InvalidArgument("policy must not be NULL");
    thread_region_or_throw().policy = policy_from_c(*policy, default_host_memory());
  });
}

int tms_get_backup_policy(tms_backup_policy* policy) {
  return call_guarded([&] {
    if (policy == nullptr) throw InvalidArgument("policy must not be NULL");
    *policy = policy_to_c(thread_region_or_defaults().policy);
  });
}

int tms_set_enable_cpu_backup(bool enable) {
  return call_guarded([&] {
    BackupPolicy& policy = thread_region_or_throw().policy;
    policy = with_cpu_backup(policy, enable, default_host_memory());
  });
}

bool tms_get_enable_cpu_backup(void) {
  return keeps_host_copy(thread_region_or_defaults().policy.kind);
}

int tms_set_cpu_backup_backend(const char* backend) {
  return call_guarded([&] {
    BackupPolicy& policy = thread_region_or_throw().policy;
    policy = with_host_memory(policy,
                              parse_host_memory_kind(require_text(backend, "CPU backup backend")));
  });
}

const char* tms_get_cpu_backup_backend(void) {
  const BackupPolicy& policy = thread_region_or_defaults().policy;
  return host_memory_kind_name(keeps_host_copy(policy.kind) ? policy.host_memory
                                                            : default_host_memory());
}

int tms_set_enable_disk_backup(bool enable) {
  return call_guarded([&] {
    BackupPolicy& policy = thread_region_or_throw().policy;
    policy = with_disk_backup(policy, enable);
  });
}

bool tms_get_enable_disk_backup(void) {
  return thread_region_or_defaults().policy.kind == BackupKind::kDisk;
}

int tms_set_cpu_backup_compress(bool enable) {
  return call_guarded([&] {
    BackupPolicy& policy = thread_region_or_throw().policy;
    policy = with_compress(policy, enable);
  });
}

bool tms_get_cpu_backup_compress(void) {
  return thread_region_or_defaults().policy.kind == BackupKind::kHostCompressed;
}

// ---- process-wide settings ----

int tms_set_disk_backup_dir(const char* path) {
  return call_guarded(
      [&] { runtime().engine->set_disk_backup_dir(require_text(path, "disk backup directory")); });
}

int tms_get_disk_backup_dir(char* buffer, size_t capacity, size_t* required) {
  return call_guarded([&] {
    const std::string dir = runtime().engine->disk_backup_dir();
    if (required != nullptr) *required = dir.size() + 1;
    if (buffer == nullptr || capacity < dir.size() + 1) {
      throw InvalidArgument("buffer of " + std::to_string(capacity) + " bytes is too small; " +
                            std::to_string(dir.size() + 1) + " needed");
    }
    dir.copy(buffer, dir.size());
    buffer[dir.size()] = '\0';
  });
}

int tms_remove_orphaned_backups(const char* directory, uint64_t* removed) {
  return call_guarded([&] {
    std::string dir = directory != nullptr ? std::string(directory) : std::string();
    if (directory == nullptr) {
      dir = runtime().engine->disk_backup_dir();
      if (dir.empty()) {
        throw ConfigError(
            "no disk backup directory is set; pass one, set TMS_DISK_BACKUP_DIR or "
            "call set_disk_backup_dir()");
      }
    }
    const std::size_t count = remove_orphaned_backups(posix_file_io(), dir);
    if (removed != nullptr) *removed = count;
  });
}

int set_memory_margin_bytes(uint64_t bytes) {
  return call_guarded([&] { runtime().engine->set_memory_margin_bytes(bytes); });
}

uint64_t tms_get_memory_margin_bytes(void) {
  uint64_t bytes = 0;
  call_guarded([&] { bytes = runtime().engine->memory_margin_bytes(); });
  return bytes;
}

int tms_set_retain_cpu_backup(bool retain) {
  return call_guarded([&] { runtime().engine->set_retain_cpu_backup(retain); });
}

bool tms_get_retain_cpu_backup(void) {
  bool retain = false;
  call_guarded([&] { retain = runtime().engine->retain_cpu_backup(); });
  return retain;
}

// ---- allocation ----

int tms_malloc(void** out_ptr, size_t size, int device) {
  return call_guarded([&] {
    if (out_ptr == nullptr) throw InvalidArgument("out_ptr must not be NULL");
    *out_ptr = nullptr;
    const AllocationRequest request = request_from_thread(size, device);
    *out_ptr = reinterpret_cast<void*>(runtime().engine->allocate(request));
  });
}

int tms_free(void* ptr) {
  return call_guarded([&] {
    if (ptr == nullptr) return;  // like free(NULL)
    runtime().engine->free(reinterpret_cast<DevicePtr>(ptr));
  });
}

bool tms_owns(const void* ptr) {
  bool owned = false;
  call_guarded([&] { owned = runtime().engine->owns(reinterpret_cast<DevicePtr>(ptr)); });
  return owned;
}

void* tms_torch_malloc(ssize_t size, int device, void* /*stream*/) {
  void* ptr = nullptr;
  if (size <= 0) {
    fail(TMS_ERROR_INVALID_ARGUMENT, "tms_torch_malloc: size must be positive");
    return nullptr;
  }
  tms_malloc(&ptr, static_cast<size_t>(size), device);
  return ptr;
}

void tms_torch_free(void* ptr, ssize_t /*size*/, int /*device*/, void* /*stream*/) {
  // torch's free hook cannot report failure; the reason stays readable
  // through tms_last_error() and the engine logs it.
  if (tms_free(ptr) != TMS_OK) {
    try {
      tms::log(LogLevel::kError, tms_last_error());
    } catch (...) {  // no host memory for the line: the status still says it
    }
  }
}

// ---- pause and resume ----

int tms_pause(const char* tag) {
  return call_guarded([&] { runtime().engine->pause(optional_tag(tag)); });
}

int tms_resume(const char* tag) {
  return call_guarded([&] { runtime().engine->resume(optional_tag(tag)); });
}

int tms_resume_non_blocking(const char* tag) {
  return call_guarded(
      [&] { runtime().engine->resume(optional_tag(tag), tms::ResumeMode::kNonBlocking); });
}

int tms_wait_restores(const char* tag) {
  return call_guarded([&] { runtime().engine->wait(optional_tag(tag)); });
}

int tms_wait_restores_on_stream(const char* tag, void* stream) {
  return call_guarded([&] { runtime().engine->wait_on_stream(optional_tag(tag), stream); });
}

int tms_discard_backup(const void* ptr) {
  return call_guarded([&] { runtime().engine->discard_backup(reinterpret_cast<DevicePtr>(ptr)); });
}

// ---- log lines ----

static_assert(TMS_LOG_ERROR == static_cast<int>(LogLevel::kError) &&
              TMS_LOG_WARNING == static_cast<int>(LogLevel::kWarning) &&
              TMS_LOG_INFO == static_cast<int>(LogLevel::kInfo) &&
              TMS_LOG_DEBUG == static_cast<int>(LogLevel::kDebug));

int tms_set_log_callback(tms_log_callback callback) {
  // No runtime(): a sink can be installed before the engine exists, and
  // also in a fork()ed child, where the engine refuses every call.
  return call_guarded<Needs::kNoEngine>([&] { set_log_sink(callback); });
}

int tms_flush_log(void) {
  return call_guarded<Needs::kNoEngine>([] { flush_log(); });
}

int tms_lease_cpu_backup(const void* ptr, uint64_t size, uint64_t* lease, uint8_t** data) {
  return call_guarded([&] {
    if (lease == nullptr || data == nullptr)
      throw InvalidArgument("lease and data must not be NULL");
    *lease = 0;
    *data = nullptr;
    const BackupLease held = runtime().engine->lease_backup(reinterpret_cast<DevicePtr>(ptr), size);
    *lease = held.id;
    *data = held.data;
  });
}

int tms_end_cpu_backup_lease(uint64_t lease) {
  return call_guarded([&] {
    if (lease != 0) runtime().engine->end_lease(lease);
  });
}

uint8_t* tms_get_cpu_backup_pointer(const uint8_t* ptr, uint64_t size) {
  uint8_t* backup = nullptr;
  call_guarded(
      [&] { backup = runtime().engine->backup_pointer(reinterpret_cast<DevicePtr>(ptr), size); });
  return backup;
}

int tms_drain_host_releases(void) {
  return call_guarded([] { runtime().engine->drain_host_releases(); });
}

int tms_trim_host_memory(void) {
  return call_guarded([] { runtime().engine->trim_host_memory(); });
}

// ---- observability ----

int tms_stats_json(char* buffer, size_t capacity, size_t* required) {
  return call_guarded([&] {
    Runtime& rt = runtime();
    const std::string json = stats_to_json(rt.engine->stats(), rt.driver->name());
    if (required != nullptr) *required = json.size() + 1;
    if (buffer == nullptr || capacity < json.size() + 1) {
      throw InvalidArgument("stats buffer of " + std::to_string(capacity) +
                            " bytes is too small; " + std::to_string(json.size() + 1) + " needed");
    }
    json.copy(buffer, json.size());
    buffer[json.size()] = '\0';
  });
}

int tms_device_memory(int device, uint64_t* free_bytes, uint64_t* total_bytes) {
  return call_guarded([&] {
    Driver& driver = *runtime().driver;
    if (device < -1) {
      throw InvalidArgument("device " + std::to_string(device) +
                            " does not exist; pass a device index, or -1 for the current device");
    }
    if (device == -1) device = driver.current_device();
    if (device >= driver.device_count()) {
      throw InvalidArgument("device " + std::to_string(device) + " does not exist (" +
                            std::to_string(driver.device_count()) + " devices)");
    }
    const DeviceMemoryInfo info = driver.memory_info(device);
    if (free_bytes != nullptr) *free_bytes = info.free_bytes;
    if (total_bytes != nullptr) *total_bytes = info.total_bytes;
  });
}

// ---- testing controls (tms_testing.h) ----

int tms_sim_fail_call(const char* call, int nth, bool out_of_memory) {
  return call_guarded([&] {
    const DriverCall which = parse_driver_call(require_text(call, "call name"));
    runtime().faults->fail_call(
        which, nth, out_of_memory ? InjectedFailure::kOutOfMemory : InjectedFailure::kDriverError);
  });
}

int tms_sim_set_capacity(uint64_t bytes_per_device) {
  return call_guarded([&] { sim_driver_or_throw().set_capacity(bytes_per_device); });
}

int tms_sim_defer_copies(bool deferred) {
  return call_guarded([&] { sim_driver_or_throw().set_copies_deferred(deferred); });
}

}  // extern "C"
