// Typed errors of the engine. Inside the library failures are exceptions of
// these types; the C ABI (src/capi) turns each into a status code plus a
// thread-local message, and Python raises the matching exception class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "torch_memory_saver/tms.h"

namespace tms {

/// Base of every error the engine raises on purpose.
class Error : public std::runtime_error {
 public:
  Error(tms_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  [[nodiscard]] tms_status status() const noexcept { return status_; }

 private:
  tms_status status_;
};

/// The caller passed something the engine cannot accept (null tag, unknown
/// pointer, unknown backend name, bad environment value).
class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& message)
      : Error(TMS_ERROR_INVALID_ARGUMENT, message) {}
};

/// The call is valid in general but not in the current state (e.g. the
/// library was inherited through fork()).
class InvalidState : public Error {
 public:
  explicit InvalidState(const std::string& message) : Error(TMS_ERROR_INVALID_STATE, message) {}
};

/// A configuration value (environment variable or setter) is not accepted.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(TMS_ERROR_CONFIG, message) {}
};

/// Host-side I/O (disk backup, mmap) failed.
class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(TMS_ERROR_IO, message) {}
};

/// A driver call returned an error. Names the call and the driver's code.
class DriverError : public Error {
 public:
  DriverError(const std::string& call, const std::string& result_name, const std::string& detail)
      : Error(TMS_ERROR_DRIVER, call + " failed with " + result_name +
                                    (detail.empty() ? std::string() : " (" + detail + ")")),
        call_(call),
        result_name_(result_name) {}
  [[nodiscard]] const std::string& call() const noexcept { return call_; }
  [[nodiscard]] const std::string& result_name() const noexcept { return result_name_; }

 protected:
  DriverError(tms_status status, const std::string& call, const std::string& result_name,
              const std::string& message)
      : Error(status, message), call_(call), result_name_(result_name) {}

 private:
  std::string call_;
  std::string result_name_;
};

/// The driver library could not be loaded or lacks an entry point.
class DriverUnavailable : public Error {
 public:
  explicit DriverUnavailable(const std::string& message)
      : Error(TMS_ERROR_DRIVER_UNAVAILABLE, message) {}
};

/// Not enough device (or host) memory. Carries how much was asked for and
/// how much the driver reported free at that moment.
class OutOfMemory : public DriverError {
 public:
  OutOfMemory(const std::string& call, const std::string& message, std::size_t bytes_needed,
              std::size_t bytes_free)
      : DriverError(TMS_ERROR_OUT_OF_MEMORY, call, "out of memory",
                    "out of memory in " + call + ": " + message),
        bytes_needed_(bytes_needed),
        bytes_free_(bytes_free) {}
  [[nodiscard]] std::size_t bytes_needed() const noexcept { return bytes_needed_; }
  [[nodiscard]] std::size_t bytes_free() const noexcept { return bytes_free_; }

 private:
  std::size_t bytes_needed_;
  std::size_t bytes_free_;
};

/// Out of memory on one device (a scratch area, say), for callers that
/// report what that device needs and has free.
class DeviceOutOfMemory : public OutOfMemory {
 public:
  DeviceOutOfMemory(int device, const OutOfMemory& cause) : OutOfMemory(cause), device_(device) {}
  [[nodiscard]] int device() const noexcept { return device_; }

 private:
  int device_;
};

/// Formats an address for messages: "0x7f0000000000".
std::string hex_address(std::uint64_t address);

}  // namespace tms
