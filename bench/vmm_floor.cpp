// The raw VMM floor of the benchmark: loops of the bare driver calls that a
// pause and a resume without backup are made of, with no engine around them.
//
//   map side     reserve one range, then per handle create + map + set access
//   unmap side   per handle unmap + release, then the range is freed
//
// It runs on the engine's Driver seam (CudaDriver, whose entry points come
// from the one symbol list in src/driver/cuda_symbols.h, or SimDriver), so no
// CUDA type or signature is written down a second time anywhere, and it runs
// on the simulated driver in CI. It is a shared library rather than a program
// because the benchmark compares the engine with this loop in the same
// process: the driver's own times drift between processes.
//
// One C entry point, loaded with ctypes by torch_memory_saver.bench.vmm:
//
//   int tms_vmm_floor_measure(driver, device, count, handle_bytes, repeats,
//                             slow_round_s, options, json, json_capacity,
//                             error, error_capacity)
//
// returns 0 and a JSON document of per-round seconds in `json`, or 1 and a
// message in `error`; it never throws or aborts.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/sizes.h"
#include "driver/cuda_driver.h"
#include "driver/sim_driver.h"
#include "torch_memory_saver/tms.h"  // TMS_API

namespace {

using Clock = std::chrono::steady_clock;

// Option bits of tms_vmm_floor_measure (mirrored by name in bench/vmm.py).
constexpr unsigned kBatchedMap = 1U;    // create every handle first, then map + access each
constexpr unsigned kBatchedUnmap = 2U;  // unmap every handle, then release every handle
constexpr unsigned kTouch = 4U;         // write all mapped memory before the unmap side
constexpr unsigned kSyncFirst = 8U;     // the unmap side starts with a device synchronize

constexpr std::size_t kTouchChunk = std::size_t{64} << 20;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::unique_ptr<tms::Driver> make_driver(std::string_view name, std::size_t bytes) {
  if (name == "cuda") return std::make_unique<tms::CudaDriver>();
  if (name == "sim") {
    tms::SimDriverOptions options;
    options.capacity_bytes = std::max(options.capacity_bytes, bytes);
    return std::make_unique<tms::SimDriver>(options);
  }
  throw std::invalid_argument("unknown driver '" + std::string(name) + "' (cuda or sim)");
}

// One reservation and the handles mapped into it. The destructor gives back
// whatever a failed round left (mapped ranges, handles, the range) and ignores
// errors: it only runs on the way out.
class Layout {
 public:
  Layout(tms::Driver& driver, int device, std::size_t count, std::size_t handle_bytes)
      : driver_(driver),
        device_(device),
        size_(handle_bytes),
        handles_(count, 0),
        mapped_(count, false) {
    va_ = driver_.reserve(count * size_, driver_.granularity(device_));
  }
  ~Layout() {
    for (std::size_t i = 0; i < handles_.size(); ++i) {
      try {
        if (mapped_[i]) driver_.unmap(address(i), size_);
        if (handles_[i] != 0) driver_.release_physical(handles_[i]);
      } catch (const std::exception&) {
      }
    }
    try {
      driver_.free_reservation(va_, handles_.size() * size_);
    } catch (const std::exception&) {
    }
  }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;

  [[nodiscard]] tms::DevicePtr address(std::size_t i) const { return va_ + i * size_; }
  [[nodiscard]] std::size_t count() const { return handles_.size(); }
  [[nodiscard]] std::size_t handle_bytes() const { return size_; }

  void create(std::size_t i) { handles_[i] = driver_.create_physical(device_, size_); }
  void map(std::size_t i) {
    driver_.map(address(i), size_, handles_[i]);
    mapped_[i] = true;
    driver_.set_access(address(i), size_, device_);
  }
  void unmap(std::size_t i) {
    driver_.unmap(address(i), size_);
    mapped_[i] = false;
  }
  void release(std::size_t i) {
    driver_.release_physical(handles_[i]);
    handles_[i] = 0;
  }

 private:
  tms::Driver& driver_;
  int device_;
  std::size_t size_;
  std::vector<tms::PhysicalHandle> handles_;
  std::vector<bool> mapped_;
  tms::DevicePtr va_ = 0;
};

// Writes every byte of a layout from a page-locked host chunk on one stream,
// so the unmap side sees memory the device has written (as a real tensor's).
class Toucher {
 public:
  Toucher(tms::Driver& driver, int device, std::size_t bytes)
      : driver_(driver), device_(device), size_(std::min(bytes, kTouchChunk)) {
    void* ptr = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr == MAP_FAILED) throw std::runtime_error("mmap of the touch buffer failed");
    host_ = ptr;
    std::memset(host_, 0x5a, size_);
    driver_.host_register(host_, size_);
    registered_ = true;
    stream_ = driver_.create_stream(device_);
  }
  ~Toucher() {
    try {
      if (stream_ != nullptr) driver_.destroy_stream(device_, stream_);
      if (registered_) driver_.host_unregister(host_);
    } catch (const std::exception&) {
    }
    munmap(host_, size_);
  }
  Toucher(const Toucher&) = delete;
  Toucher& operator=(const Toucher&) = delete;

  void touch(const Layout& layout) {
    for (std::size_t i = 0; i < layout.count(); ++i) {
      for (std::size_t offset = 0; offset < layout.handle_bytes(); offset += size_) {
        const std::size_t length = std::min(size_, layout.handle_bytes() - offset);
        driver_.copy_to_device_async(device_, layout.address(i) + offset, host_, length, stream_);
      }
    }
    driver_.synchronize_stream(device_, stream_);
  }

 private:
  tms::Driver& driver_;
  int device_;
  std::size_t size_;
  void* host_ = nullptr;
  bool registered_ = false;
  tms::StreamHandle stream_ = nullptr;
};

struct Rounds {
  std::vector<double> map, unmap, synchronize, unmap_only, release;
};

void map_side(Layout& layout, unsigned options) {
  if ((options & kBatchedMap) != 0) {
    for (std::size_t i = 0; i < layout.count(); ++i) layout.create(i);
    for (std::size_t i = 0; i < layout.count(); ++i) layout.map(i);
  } else {
    for (std::size_t i = 0; i < layout.count(); ++i) {
      layout.create(i);
      layout.map(i);
    }
  }
}

void unmap_side(tms::Driver& driver, int device, Layout& layout, unsigned options, Rounds& out) {
  const Clock::time_point start = Clock::now();
  if ((options & kSyncFirst) != 0) driver.synchronize(device);
  out.synchronize.push_back(seconds_since(start));
  const Clock::time_point synced = Clock::now();
  if ((options & kBatchedUnmap) != 0) {
    for (std::size_t i = 0; i < layout.count(); ++i) layout.unmap(i);
    out.unmap_only.push_back(seconds_since(synced));
    const Clock::time_point unmapped = Clock::now();
    for (std::size_t i = 0; i < layout.count(); ++i) layout.release(i);
    out.release.push_back(seconds_since(unmapped));
  } else {
    for (std::size_t i = 0; i < layout.count(); ++i) {
      layout.unmap(i);
      layout.release(i);
    }
  }
  out.unmap.push_back(seconds_since(start));
}

void append_list(std::string& json, const char* key, const std::vector<double>& values) {
  json += ", \"";
  json += key;
  json += "\": [";
  for (std::size_t i = 0; i < values.size(); ++i) {
    char number[40];
    std::snprintf(number, sizeof(number), "%s%.9g", i == 0 ? "" : ", ", values[i]);
    json += number;
  }
  json += ']';
}

std::string measure(std::string_view driver_name, int device, std::size_t count,
                    std::size_t handle_bytes, int repeats, double slow_round_s, unsigned options) {
  if (count == 0 || handle_bytes == 0 || repeats <= 0) {
    throw std::invalid_argument("count, handle_bytes and repeats must be positive");
  }
  std::unique_ptr<tms::Driver> driver = make_driver(driver_name, count * handle_bytes);
  const std::size_t granularity = driver->granularity(device);
  const std::size_t size = tms::round_up(handle_bytes, granularity);
  std::unique_ptr<Toucher> toucher;
  if ((options & kTouch) != 0) toucher = std::make_unique<Toucher>(*driver, device, size);
  Rounds rounds;
  for (int round = 0; round < repeats; ++round) {
    Layout layout(*driver, device, count, size);
    driver->synchronize(device);
    const Clock::time_point start = Clock::now();
    map_side(layout, options);
    rounds.map.push_back(seconds_since(start));
    if (toucher) toucher->touch(layout);
    unmap_side(*driver, device, layout, options, rounds);
    if (rounds.map.back() + rounds.unmap.back() > slow_round_s) break;
  }
  std::string json = "{\"driver\": \"" + std::string(driver->name()) + "\"";
  json += ", \"device\": " + std::to_string(device);
  json += ", \"count\": " + std::to_string(count);
  json += ", \"handle_bytes\": " + std::to_string(size);
  json += ", \"granularity\": " + std::to_string(granularity);
  json += ", \"options\": " + std::to_string(options);
  append_list(json, "map_all_seconds", rounds.map);
  append_list(json, "unmap_all_seconds", rounds.unmap);
  append_list(json, "synchronize_all_seconds", rounds.synchronize);
  append_list(json, "unmap_only_all_seconds", rounds.unmap_only);
  append_list(json, "release_all_seconds", rounds.release);
  json += '}';
  return json;
}

// Copies `text` into a caller's buffer, cut to fit and NUL-terminated.
void copy_out(const std::string& text, char* buffer, std::size_t capacity) {
  if (buffer == nullptr || capacity == 0) return;
  const std::size_t length = std::min(text.size(), capacity - 1);
  std::memcpy(buffer, text.data(), length);
  buffer[length] = '\0';
}

}  // namespace

extern "C" {

// Exported (TMS_API): the only symbol of the library (cmake/exports.cmake).
TMS_API int tms_vmm_floor_measure(const char* driver, int device, std::uint64_t count,
                                  std::uint64_t handle_bytes, int repeats, double slow_round_s,
                                  unsigned options, char* json, std::size_t json_capacity,
                                  char* error, std::size_t error_capacity) {
  try {
    const std::string result = measure(driver != nullptr ? driver : "", device, count, handle_bytes,
                                       repeats, slow_round_s, options);
    if (result.size() >= json_capacity) {
      copy_out("the result needs " + std::to_string(result.size() + 1) + " bytes", error,
               error_capacity);
      return 1;
    }
    copy_out(result, json, json_capacity);
    return 0;
  } catch (const std::exception& failure) {
    copy_out(failure.what(), error, error_capacity);
  } catch (...) {
    copy_out("unknown exception", error, error_capacity);
  }
  return 1;
}

}  // extern "C"
