// A fast 64-bit checksum of a disk backup, computed while the file is
// written and again while it is read back, so that a file changed or
// damaged while paused is an error instead of wrong tensor contents.
//
// Not a cryptographic hash: nobody but this process (and root) can reach an
// unnamed backup file, so it guards against corruption and same-user
// tampering, not against a forger. The mixing is xxHash64's round (two
// multiplies and a rotation per 8 bytes, four independent lanes): cheap
// enough per core to keep up with a disk. Disk backup keeps one checksum
// per block, computed by the I/O thread that moves the block, so hashing
// runs on as many cores as there are transfers in flight and stays off the
// disk's critical path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tms {

/// Streaming checksum over data fed in pieces that are multiples of 32
/// bytes (disk backup feeds 4 KiB-padded blocks).
class Checksum {
 public:
  static constexpr std::size_t kBlock = 32;

  /// @pre size % kBlock == 0.
  void update(const std::uint8_t* data, std::size_t size);
  [[nodiscard]] std::uint64_t digest() const;

 private:
  std::uint64_t lanes_[4] = {0x60ea27eeadc0b5d6ULL, 0xc2b2ae3d27d4eb4fULL, 0x0ULL,
                             0x61c8864e7a143579ULL};
  std::uint64_t length_ = 0;
};

}  // namespace tms
