// The compressed backup format: the one definition shared by the CPU
// reference codec (cpu_codec.cpp, used by the simulated driver and the tests)
// and the GPU kernels (kernels/codec.cu). Plain constexpr C++ so nvcc and the
// host compiler read the same constants.
//
// Why this shape. bf16 weights spend 8 of 16 bits on an exponent that takes
// a handful of values (a normal(0, 0.02) tensor: ~2.7 bits of entropy), while
// sign and mantissa are close to random. So each 16-bit little-endian word is
// split into a *symbol* byte, entropy-coded, and a *residual* byte, stored as
// is. Two splits are tried per chunk and the smaller wins:
//   kExponent  symbol = bits 7..14 (the bf16 exponent), residual = sign | mantissa
//   kHighByte  symbol = bits 8..15, residual = bits 0..7 (fits fp16 better)
// The symbol code is fixed-width: a chunk's 2^k - 1 most frequent symbols get
// k-bit codes (k = 1..7, picked per chunk by exact size), the code 2^k - 1 is
// an escape and the symbol follows in an escape list. Fixed width lets every
// GPU thread find its codes without decoding anything before them; it costs
// ~0.6 bit per word against an ideal entropy coder (docs/compression.md)
// and buys kernels far faster than the host link, so the link, not the
// codec, bounds a compressed pause or resume.
//
// Layout. An allocation's backup is a sequence of *batches*, one per
// kBatchBytes of input (the last may be shorter). A batch is
//   u32 stored_size[chunks], zero-padded to a multiple of 16 bytes
//   the chunks, each stored_size bytes (a multiple of 16)
// and a chunk (kChunkBytes of input, the last may be shorter) is
//   ChunkHeader (16 bytes)
//   raw mode:    the input bytes, zero-padded to 16
//   coded modes: table (2^k - 1 symbols, zero-padded to 16),
//                residual plane (one byte per word),
//                code plane (k bytes per 8 words: code j of a group at bits
//                j*k.., little-endian), escape list (one byte per escape),
//                zero-padded to 16.
// A chunk whose input is not a multiple of 16 bytes, or that a code would not
// shrink, is stored raw: the backup never grows by more than 20 bytes per
// 32 KiB chunk (0.06 %) plus padding of the size table.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define TMS_CODEC_FN __host__ __device__ inline
#else
#define TMS_CODEC_FN inline
#endif

namespace tms::codec {

inline constexpr std::uint32_t kChunkBytes = 32768;                    // input bytes per chunk
inline constexpr std::uint64_t kBatchBytes = std::uint64_t{32} << 20;  // input bytes per batch
inline constexpr std::uint32_t kChunksPerBatch =
    static_cast<std::uint32_t>(kBatchBytes / kChunkBytes);
inline constexpr std::uint32_t kHeaderBytes = 16;
inline constexpr std::uint32_t kMaxCodeBits = 7;

/// How a chunk is stored.
enum Mode : std::uint32_t {
  kRaw = 0,
  kExponent = 1,  ///< symbol = bits 7..14 of each word
  kHighByte = 2,  ///< symbol = bits 8..15 of each word
};

/// First 16 bytes of every stored chunk.
struct ChunkHeader {
  std::uint32_t mode;       ///< Mode
  std::uint32_t code_bits;  ///< k (coded modes), 0 for raw
  std::uint32_t input_bytes;
  std::uint32_t escapes;  ///< entries in the escape list
};
static_assert(sizeof(ChunkHeader) == kHeaderBytes);

TMS_CODEC_FN constexpr std::uint64_t align16(std::uint64_t value) {
  return (value + 15) & ~std::uint64_t{15};
}

TMS_CODEC_FN constexpr std::uint32_t table_entries(std::uint32_t code_bits) {
  return (1u << code_bits) - 1;
}

TMS_CODEC_FN constexpr std::uint32_t raw_chunk_bytes(std::uint32_t input_bytes) {
  return static_cast<std::uint32_t>(kHeaderBytes + align16(input_bytes));
}

/// Stored size of a coded chunk of `words` 16-bit words (a multiple of 8).
TMS_CODEC_FN constexpr std::uint32_t coded_chunk_bytes(std::uint32_t words, std::uint32_t code_bits,
                                                       std::uint32_t escapes) {
  return static_cast<std::uint32_t>(
      kHeaderBytes + align16(table_entries(code_bits)) +
      align16(std::uint64_t{words} + words / 8 * code_bits + escapes));
}

/// The two splits of a little-endian 16-bit word into (symbol, residual).
TMS_CODEC_FN constexpr std::uint8_t symbol_of(std::uint32_t mode, std::uint16_t word) {
  return static_cast<std::uint8_t>(mode == kExponent ? (word >> 7) & 0xff : word >> 8);
}
TMS_CODEC_FN constexpr std::uint8_t residual_of(std::uint32_t mode, std::uint16_t word) {
  return static_cast<std::uint8_t>(mode == kExponent ? ((word >> 8) & 0x80) | (word & 0x7f)
                                                     : word & 0xff);
}
TMS_CODEC_FN constexpr std::uint16_t word_of(std::uint32_t mode, std::uint8_t symbol,
                                             std::uint8_t residual) {
  return static_cast<std::uint16_t>(mode == kExponent
                                        ? ((residual & 0x80u) << 8) | (std::uint32_t{symbol} << 7) |
                                              (residual & 0x7fu)
                                        : (std::uint32_t{symbol} << 8) | residual);
}

/// Input chunks in a batch / batches in an allocation of `bytes`.
TMS_CODEC_FN constexpr std::uint32_t chunk_count(std::uint64_t bytes) {
  return static_cast<std::uint32_t>((bytes + kChunkBytes - 1) / kChunkBytes);
}
TMS_CODEC_FN constexpr std::uint64_t batch_count(std::uint64_t bytes) {
  return (bytes + kBatchBytes - 1) / kBatchBytes;
}
/// Bytes of the size table at the head of a batch of `chunks` chunks.
TMS_CODEC_FN constexpr std::uint32_t batch_head_bytes(std::uint32_t chunks) {
  return static_cast<std::uint32_t>(align16(std::uint64_t{chunks} * 4));
}
/// The most a batch of `input_bytes` can take when stored (every chunk raw).
TMS_CODEC_FN constexpr std::uint64_t max_batch_bytes(std::uint64_t input_bytes) {
  const std::uint32_t chunks = chunk_count(input_bytes);
  return batch_head_bytes(chunks) + std::uint64_t{chunks} * raw_chunk_bytes(kChunkBytes);
}

/// The stored size a chunk gets, from the symbol histograms of both splits,
/// and how: picks the smallest of raw and every (split, k); ties go to raw,
/// then to kExponent, then to the smaller k. `sorted_counts[m][r]` is the
/// count of the split's r-th most frequent symbol (m: 0 = kExponent,
/// 1 = kHighByte). The GPU kernels and the CPU codec both call this, so they
/// choose alike.
struct Choice {
  std::uint32_t mode = kRaw;
  std::uint32_t code_bits = 0;
  std::uint32_t escapes = 0;
  std::uint32_t stored_bytes = 0;
};

/// `covered[m][k]`: words whose symbol is among the 2^k - 1 most frequent of
/// split m (k = 1..7; index 0 unused).
TMS_CODEC_FN Choice choose(std::uint32_t input_bytes,
                           const std::uint32_t (&covered)[2][kMaxCodeBits + 1]) {
  Choice best;
  best.stored_bytes = raw_chunk_bytes(input_bytes);
  if (input_bytes % 16 != 0) return best;
  const std::uint32_t words = input_bytes / 2;
  for (std::uint32_t m = 0; m < 2; ++m) {
    for (std::uint32_t k = 1; k <= kMaxCodeBits; ++k) {
      const std::uint32_t escapes = words - covered[m][k];
      const std::uint32_t bytes = coded_chunk_bytes(words, k, escapes);
      if (bytes < best.stored_bytes)
        best = Choice{m == 0 ? kExponent : kHighByte, k, escapes, bytes};
    }
  }
  return best;
}

}  // namespace tms::codec
