// The CPU reference codec of the compressed backup format (format.h). The
// simulated driver runs it in place of the GPU kernels, so CI exercises the
// format, the chunking and the raw fallback; the GPU tests check that the
// kernels write the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tms::codec {

/// Stored size of each chunk of `input` (chunk_count(size) entries).
void measure(const std::uint8_t* input, std::uint64_t size, std::uint32_t* stored_sizes);

/// Encodes one batch (size <= kBatchBytes) into `output` (at least
/// max_batch_bytes(size) bytes); returns the bytes written.
std::uint64_t encode_batch(const std::uint8_t* input, std::uint64_t size, std::uint8_t* output);

/// Stored length of the batch at `stored` holding `size` input bytes: its
/// size table plus the chunk sizes the table lists.
std::uint64_t stored_batch_bytes(const std::uint8_t* stored, std::uint64_t size);

/// Decodes one batch written by encode_batch into `size` bytes at `output`.
/// `stored` is the batch's stored length. @throws InvalidArgument when the
/// batch is not well formed (a header that contradicts the sizes).
void decode_batch(const std::uint8_t* stored, std::uint64_t stored_bytes, std::uint8_t* output,
                  std::uint64_t size);

}  // namespace tms::codec
