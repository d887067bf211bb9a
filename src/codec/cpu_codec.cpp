#include "codec/cpu_codec.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "codec/format.h"
#include "common/errors.h"

namespace tms::codec {
namespace {

std::uint16_t load_word(const std::uint8_t* bytes, std::uint32_t index) {
  return static_cast<std::uint16_t>(bytes[2 * index] | (bytes[2 * index + 1] << 8));
}

// Symbols of split `mode` by descending count, ties by ascending symbol: the
// order that the table lists and that codes index.
struct Ranking {
  std::array<std::uint8_t, 256> symbol_at{};  // rank -> symbol
  std::array<std::uint8_t, 256> rank_of{};    // symbol -> rank
};

Ranking rank(const std::array<std::uint32_t, 256>& counts) {
  Ranking ranking;
  std::array<std::uint32_t, 256> order{};
  for (std::uint32_t s = 0; s < 256; ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return counts[a] > counts[b]; });
  for (std::uint32_t r = 0; r < 256; ++r) {
    ranking.symbol_at[r] = static_cast<std::uint8_t>(order[r]);
    ranking.rank_of[order[r]] = static_cast<std::uint8_t>(r);
  }
  return ranking;
}

struct Analysis {
  Choice choice;
  Ranking ranking;  // of the chosen split
};

Analysis analyse(const std::uint8_t* input, std::uint32_t size) {
  Analysis analysis;
  if (size % 16 != 0) {
    analysis.choice = choose(size, {});
    return analysis;
  }
  const std::uint32_t words = size / 2;
  std::array<std::array<std::uint32_t, 256>, 2> counts{};
  for (std::uint32_t i = 0; i < words; ++i) {
    const std::uint16_t word = load_word(input, i);
    ++counts[0][symbol_of(kExponent, word)];
    ++counts[1][symbol_of(kHighByte, word)];
  }
  std::uint32_t covered[2][kMaxCodeBits + 1] = {};
  Ranking rankings[2] = {rank(counts[0]), rank(counts[1])};
  for (std::uint32_t m = 0; m < 2; ++m) {
    std::uint32_t sum = 0;
    std::uint32_t r = 0;
    for (std::uint32_t k = 1; k <= kMaxCodeBits; ++k) {
      for (; r < table_entries(k); ++r) sum += counts[m][rankings[m].symbol_at[r]];
      covered[m][k] = sum;
    }
  }
  analysis.choice = choose(size, covered);
  if (analysis.choice.mode != kRaw) {
    analysis.ranking = rankings[analysis.choice.mode == kExponent ? 0 : 1];
  }
  return analysis;
}

// Writes one chunk; returns its stored size.
std::uint32_t encode_chunk(const std::uint8_t* input, std::uint32_t size, std::uint8_t* output) {
  const Analysis analysis = analyse(input, size);
  const Choice& choice = analysis.choice;
  std::memset(output, 0, choice.stored_bytes);
  const ChunkHeader header{choice.mode, choice.code_bits, size, choice.escapes};
  std::memcpy(output, &header, sizeof header);
  std::uint8_t* body = output + kHeaderBytes;
  if (choice.mode == kRaw) {
    std::memcpy(body, input, size);
    return choice.stored_bytes;
  }
  const std::uint32_t k = choice.code_bits;
  const std::uint32_t entries = table_entries(k);
  const std::uint32_t words = size / 2;
  for (std::uint32_t r = 0; r < entries; ++r) body[r] = analysis.ranking.symbol_at[r];
  std::uint8_t* residuals = body + align16(entries);
  std::uint8_t* codes = residuals + words;
  std::uint8_t* escapes = codes + words / 8 * k;
  for (std::uint32_t group = 0; group < words / 8; ++group) {
    std::uint64_t packed = 0;
    for (std::uint32_t j = 0; j < 8; ++j) {
      const std::uint32_t i = group * 8 + j;
      const std::uint16_t word = load_word(input, i);
      const std::uint8_t symbol = symbol_of(choice.mode, word);
      residuals[i] = residual_of(choice.mode, word);
      std::uint32_t code = analysis.ranking.rank_of[symbol];
      if (code >= entries) {
        code = entries;
        *escapes++ = symbol;
      }
      packed |= std::uint64_t{code} << (j * k);
    }
    for (std::uint32_t b = 0; b < k; ++b)
      codes[group * k + b] = static_cast<std::uint8_t>(packed >> (8 * b));
  }
  return choice.stored_bytes;
}

[[noreturn]] void malformed(const std::string& what) {
  throw InvalidArgument("compressed backup is malformed: " + what);
}

void decode_chunk(const std::uint8_t* stored, std::uint32_t stored_bytes, std::uint8_t* output,
                  std::uint32_t size) {
  ChunkHeader header{};
  if (stored_bytes < kHeaderBytes) malformed("chunk shorter than its header");
  std::memcpy(&header, stored, sizeof header);
  if (header.input_bytes != size) malformed("chunk size does not match its position");
  const std::uint8_t* body = stored + kHeaderBytes;
  if (header.mode == kRaw) {
    if (stored_bytes != raw_chunk_bytes(size)) malformed("raw chunk of the wrong length");
    std::memcpy(output, body, size);
    return;
  }
  const std::uint32_t k = header.code_bits;
  if ((header.mode != kExponent && header.mode != kHighByte) || k < 1 || k > kMaxCodeBits ||
      size % 16 != 0 || header.escapes > size / 2 ||
      stored_bytes != coded_chunk_bytes(size / 2, k, header.escapes)) {
    malformed("coded chunk header does not match its length");
  }
  const std::uint32_t entries = table_entries(k);
  const std::uint32_t words = size / 2;
  const std::uint8_t* table = body;
  const std::uint8_t* residuals = body + align16(entries);
  const std::uint8_t* codes = residuals + words;
  const std::uint8_t* escapes = codes + words / 8 * k;
  const std::uint8_t* escapes_end = escapes + header.escapes;
  const std::uint32_t mask = (1u << k) - 1;
  for (std::uint32_t group = 0; group < words / 8; ++group) {
    std::uint64_t packed = 0;
    for (std::uint32_t b = 0; b < k; ++b) packed |= std::uint64_t{codes[group * k + b]} << (8 * b);
    for (std::uint32_t j = 0; j < 8; ++j) {
      const std::uint32_t i = group * 8 + j;
      const std::uint32_t code = static_cast<std::uint32_t>(packed >> (j * k)) & mask;
      std::uint8_t symbol = 0;
      if (code == entries) {
        if (escapes == escapes_end) malformed("more escapes than the header says");
        symbol = *escapes++;
      } else {
        symbol = table[code];
      }
      const std::uint16_t word = word_of(header.mode, symbol, residuals[i]);
      output[2 * i] = static_cast<std::uint8_t>(word & 0xff);
      output[2 * i + 1] = static_cast<std::uint8_t>(word >> 8);
    }
  }
  if (escapes != escapes_end) malformed("fewer escapes than the header says");
}

}  // namespace

void measure(const std::uint8_t* input, std::uint64_t size, std::uint32_t* stored_sizes) {
  const std::uint32_t chunks = chunk_count(size);
  for (std::uint32_t c = 0; c < chunks; ++c) {
    const std::uint64_t offset = std::uint64_t{c} * kChunkBytes;
    const auto length =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(kChunkBytes, size - offset));
    stored_sizes[c] = analyse(input + offset, length).choice.stored_bytes;
  }
}

std::uint64_t encode_batch(const std::uint8_t* input, std::uint64_t size, std::uint8_t* output) {
  if (size > kBatchBytes) throw InvalidArgument("a compressed batch holds at most kBatchBytes");
  const std::uint32_t chunks = chunk_count(size);
  const std::uint32_t head = batch_head_bytes(chunks);
  std::memset(output, 0, head);
  std::uint64_t written = head;
  for (std::uint32_t c = 0; c < chunks; ++c) {
    const std::uint64_t offset = std::uint64_t{c} * kChunkBytes;
    const auto length =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(kChunkBytes, size - offset));
    const std::uint32_t stored = encode_chunk(input + offset, length, output + written);
    std::memcpy(output + 4 * std::uint64_t{c}, &stored, 4);
    written += stored;
  }
  return written;
}

std::uint64_t stored_batch_bytes(const std::uint8_t* stored, std::uint64_t size) {
  const std::uint32_t chunks = chunk_count(size);
  std::uint64_t bytes = batch_head_bytes(chunks);
  for (std::uint32_t c = 0; c < chunks; ++c) {
    std::uint32_t length = 0;
    std::memcpy(&length, stored + 4 * std::uint64_t{c}, 4);
    bytes += length;
  }
  return bytes;
}

void decode_batch(const std::uint8_t* stored, std::uint64_t stored_bytes, std::uint8_t* output,
                  std::uint64_t size) {
  if (size > kBatchBytes) malformed("batch longer than kBatchBytes");
  const std::uint32_t chunks = chunk_count(size);
  std::uint64_t position = batch_head_bytes(chunks);
  if (position > stored_bytes) malformed("batch shorter than its size table");
  for (std::uint32_t c = 0; c < chunks; ++c) {
    std::uint32_t length = 0;
    std::memcpy(&length, stored + 4 * std::uint64_t{c}, 4);
    if (length > stored_bytes - position) malformed("chunk runs past the end of its batch");
    const std::uint64_t offset = std::uint64_t{c} * kChunkBytes;
    decode_chunk(stored + position, length, output + offset,
                 static_cast<std::uint32_t>(std::min<std::uint64_t>(kChunkBytes, size - offset)));
    position += length;
  }
  if (position != stored_bytes) malformed("batch longer than its chunks");
}

}  // namespace tms::codec
