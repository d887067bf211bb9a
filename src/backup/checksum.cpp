#include "backup/checksum.h"

#include <cstring>

namespace tms {
namespace {

constexpr std::uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kPrime3 = 0x165667B19E3779F9ULL;

std::uint64_t rotate_left(std::uint64_t value, int bits) {
  return (value << bits) | (value >> (64 - bits));
}

std::uint64_t round(std::uint64_t lane, std::uint64_t input) {
  return rotate_left(lane + input * kPrime2, 31) * kPrime1;
}

}  // namespace

void Checksum::update(const std::uint8_t* data, std::size_t size) {
  for (std::size_t offset = 0; offset < size; offset += kBlock) {
    for (int lane = 0; lane < 4; ++lane) {
      std::uint64_t word = 0;
      std::memcpy(&word, data + offset + 8 * lane, sizeof word);
      lanes_[lane] = round(lanes_[lane], word);
    }
  }
  length_ += size;
}

std::uint64_t Checksum::digest() const {
  std::uint64_t hash = rotate_left(lanes_[0], 1) + rotate_left(lanes_[1], 7) +
                       rotate_left(lanes_[2], 12) + rotate_left(lanes_[3], 18);
  for (const std::uint64_t lane : lanes_) hash = (hash ^ round(0, lane)) * kPrime1 + kPrime3;
  hash ^= length_;
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  return hash ^ (hash >> 32);
}

}  // namespace tms
