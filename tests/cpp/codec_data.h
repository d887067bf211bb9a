// Test data for the compressed backup format: bf16/fp16 words with the
// value distributions of model weights, and patterns a codec gets wrong.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace tms::testing {

/// float -> bf16 with round-to-nearest-even, as torch does.
inline std::uint16_t to_bf16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/// float -> IEEE fp16 (normal range and denormals, round to nearest).
inline std::uint16_t to_fp16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const float magnitude = std::fabs(value);
  if (magnitude < 6.103515625e-05f) {  // denormal: multiples of 2^-24
    return static_cast<std::uint16_t>(
        sign | static_cast<std::uint32_t>(std::lround(magnitude * 16777216.0f)));
  }
  const int exponent = std::ilogb(magnitude);
  const auto mantissa =
      static_cast<std::uint32_t>(std::lround(std::ldexp(magnitude, 10 - exponent))) - 1024u;
  return static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exponent + 15) << 10) |
                                    mantissa);
}

/// `count` words of normal(0, std) weights, as bytes.
inline std::vector<std::uint8_t> normal_weights(std::size_t count, float stddev, bool bf16,
                                                std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<std::uint8_t> bytes(count * 2);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint16_t word = bf16 ? to_bf16(normal(rng)) : to_fp16(normal(rng));
    std::memcpy(bytes.data() + 2 * i, &word, 2);
  }
  return bytes;
}

inline std::vector<std::uint8_t> random_bytes(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> bytes(count);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(rng());
  return bytes;
}

}  // namespace tms::testing
