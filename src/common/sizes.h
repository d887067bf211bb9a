// Sizes: rounding up to a granularity, and byte counts written for people.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tms {

/// `value` rounded up to a multiple of `multiple` (> 0). Callers that take
/// sizes from users check first that this cannot wrap.
constexpr std::size_t round_up(std::size_t value, std::size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

/// Exact, for error messages: "2147483648 bytes (2.00 GiB)".
std::string describe_bytes(std::uint64_t bytes);

/// Short, for log lines: "64.0 MiB" below 1 GiB, else "8.00 GiB".
std::string describe_size(std::uint64_t bytes);

}  // namespace tms
