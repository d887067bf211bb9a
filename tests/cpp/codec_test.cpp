// The compressed backup format through the CPU reference codec: exact for
// every byte pattern, the sizes it promises, and the raw fallback.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "codec/cpu_codec.h"
#include "codec/format.h"
#include "codec_data.h"
#include "common/errors.h"

namespace tms {
namespace {

using testing::normal_weights;
using testing::random_bytes;

struct Stored {
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint64_t> batches;  // stored length of each batch
};

// Encodes like a pause does: measure, then batch by batch.
Stored encode(const std::vector<std::uint8_t>& input) {
  std::vector<std::uint32_t> sizes(codec::chunk_count(input.size()));
  codec::measure(input.data(), input.size(), sizes.data());
  Stored stored;
  for (std::uint64_t offset = 0; offset < input.size(); offset += codec::kBatchBytes) {
    const std::uint64_t length = std::min<std::uint64_t>(codec::kBatchBytes, input.size() - offset);
    std::vector<std::uint8_t> batch(codec::max_batch_bytes(length));
    const std::uint64_t written = codec::encode_batch(input.data() + offset, length, batch.data());
    std::uint64_t measured = codec::batch_head_bytes(codec::chunk_count(length));
    for (std::uint32_t c = 0; c < codec::chunk_count(length); ++c) {
      measured += sizes[offset / codec::kChunkBytes + c];
    }
    EXPECT_EQ(written, measured) << "measure and encode agree";
    EXPECT_EQ(codec::stored_batch_bytes(batch.data(), length), written);
    stored.bytes.insert(stored.bytes.end(), batch.begin(),
                        batch.begin() + static_cast<std::ptrdiff_t>(written));
    stored.batches.push_back(written);
  }
  return stored;
}

std::vector<std::uint8_t> decode(const Stored& stored, std::size_t size) {
  std::vector<std::uint8_t> output(size, 0xA5);
  std::uint64_t position = 0;
  for (std::size_t b = 0; b < stored.batches.size(); ++b) {
    const std::uint64_t offset = b * codec::kBatchBytes;
    codec::decode_batch(stored.bytes.data() + position, stored.batches[b], output.data() + offset,
                        std::min<std::uint64_t>(codec::kBatchBytes, size - offset));
    position += stored.batches[b];
  }
  return output;
}

// The most a backup of `size` bytes may take: raw chunks (16 bytes of header
// and padding each) plus the batch size tables.
std::uint64_t worst_case(std::uint64_t size) {
  std::uint64_t bytes = 0;
  for (std::uint64_t offset = 0; offset < size; offset += codec::kBatchBytes) {
    bytes += codec::max_batch_bytes(std::min<std::uint64_t>(codec::kBatchBytes, size - offset));
  }
  return bytes;
}

double ratio(const Stored& stored, std::size_t size) {
  return static_cast<double>(stored.bytes.size()) / static_cast<double>(size);
}

TEST(Codec, Bf16WeightsShrinkBelowThreeQuartersAndComeBackExact) {
  for (const float stddev : {0.02f, 0.002f, 1.0f}) {
    const auto input = normal_weights(std::size_t{1} << 20, stddev, /*bf16=*/true, 1);
    const Stored stored = encode(input);
    EXPECT_LT(ratio(stored, input.size()), 0.75) << "std " << stddev;
    EXPECT_EQ(decode(stored, input.size()), input);
  }
}

TEST(Codec, Fp16WeightsShrinkAndComeBackExact) {
  const auto input = normal_weights(std::size_t{1} << 20, 0.02f, /*bf16=*/false, 2);
  const Stored stored = encode(input);
  EXPECT_LT(ratio(stored, input.size()), 0.92);
  EXPECT_EQ(decode(stored, input.size()), input);
}

TEST(Codec, EveryWordPatternComesBackExact) {
  // All 65536 words (NaNs with payloads, infinities, denormals, -0) in
  // order, then shuffled, then each word repeated so chunks have skewed
  // histograms with many escapes.
  std::vector<std::uint8_t> input;
  for (std::uint32_t word = 0; word < 65536; ++word) {
    input.push_back(static_cast<std::uint8_t>(word & 0xff));
    input.push_back(static_cast<std::uint8_t>(word >> 8));
  }
  std::vector<std::uint8_t> shuffled = input;
  std::vector<std::uint16_t> words(65536);
  std::memcpy(words.data(), input.data(), input.size());
  std::shuffle(words.begin(), words.end(), std::mt19937(3));
  std::memcpy(shuffled.data(), words.data(), shuffled.size());
  std::vector<std::uint8_t> repeated;
  for (std::uint32_t word = 0; word < 65536; word += 7) {
    for (int r = 0; r < 9; ++r) {
      repeated.push_back(static_cast<std::uint8_t>(word & 0xff));
      repeated.push_back(static_cast<std::uint8_t>(word >> 8));
    }
  }
  for (const auto* data : {&input, &shuffled, &repeated}) {
    EXPECT_EQ(decode(encode(*data), data->size()), *data);
  }
}

TEST(Codec, SpecialFloatsAmongWeightsComeBackExact) {
  auto input = normal_weights(std::size_t{1} << 16, 0.02f, true, 4);
  const std::uint16_t specials[] = {0x7fc0, 0xffc1, 0x7f80, 0xff80, 0x0001,
                                    0x8001, 0x0000, 0x8000, 0x7f81, 0x007f};
  for (std::size_t i = 0; i < input.size() / 2; i += 97) {
    std::memcpy(input.data() + 2 * i, &specials[i % std::size(specials)], 2);
  }
  const Stored stored = encode(input);
  EXPECT_LT(ratio(stored, input.size()), 0.8);
  EXPECT_EQ(decode(stored, input.size()), input);
}

TEST(Codec, IncompressibleDataIsStoredRawWithinTheHeaderBound) {
  for (const std::size_t size : {std::size_t{1} << 20, std::size_t{3} << 20}) {
    const auto input = random_bytes(size, 5);
    const Stored stored = encode(input);
    EXPECT_EQ(stored.bytes.size(), worst_case(size));
    // 20 bytes per 32 KiB chunk: 16 of header, 4 in the batch's size table.
    EXPECT_LE(stored.bytes.size(), size + size / codec::kChunkBytes * 20 + 16);
    EXPECT_EQ(decode(stored, size), input);
  }
}

TEST(Codec, AnySizeComesBackExact) {
  // Sizes that are not multiples of a word, of a group of 8 words or of a
  // chunk: the tail chunk is stored raw.
  const auto weights = normal_weights(70000, 0.02f, true, 6);
  for (const std::size_t size :
       {1u, 2u, 15u, 16u, 17u, 4096u, 32767u, 32768u, 32769u, 65552u, 139999u, 140000u}) {
    const std::vector<std::uint8_t> input(weights.begin(),
                                          weights.begin() + static_cast<std::ptrdiff_t>(size));
    const Stored stored = encode(input);
    EXPECT_LE(stored.bytes.size(), worst_case(size)) << size;
    EXPECT_EQ(decode(stored, size), input) << size;
  }
}

TEST(Codec, SeveralBatchesComeBackExact) {
  const std::size_t size = 2 * codec::kBatchBytes + 3 * codec::kChunkBytes + 40;
  const auto input = normal_weights(size / 2, 0.02f, true, 7);
  std::vector<std::uint8_t> padded = input;
  padded.resize(size, 0x3c);
  const Stored stored = encode(padded);
  ASSERT_EQ(stored.batches.size(), 3u);
  EXPECT_LT(ratio(stored, size), 0.75);
  EXPECT_EQ(decode(stored, size), padded);
}

TEST(Codec, ConstantAndZeroDataTakeOneBitPerWordAndAHeader) {
  const std::vector<std::uint8_t> zeros(std::size_t{1} << 20, 0);
  const Stored stored = encode(zeros);
  // Residual plane (8 bits) + 1-bit codes: 9 of 16 bits.
  EXPECT_LT(ratio(stored, zeros.size()), 0.57);
  EXPECT_EQ(decode(stored, zeros.size()), zeros);
}

TEST(Codec, MalformedBatchesAreRejectedNotReadPastTheirEnd) {
  const auto input = normal_weights(codec::kChunkBytes, 0.02f, true, 8);  // two chunks
  Stored stored = encode(input);
  std::vector<std::uint8_t> output(input.size());
  // A chunk length that runs past the batch.
  std::vector<std::uint8_t> bad = stored.bytes;
  const std::uint32_t huge = 1u << 30;
  std::memcpy(bad.data(), &huge, 4);
  EXPECT_THROW(codec::decode_batch(bad.data(), bad.size(), output.data(), input.size()),
               InvalidArgument);
  // A header that claims more escapes than the chunk holds.
  bad = stored.bytes;
  const std::size_t first_chunk = codec::batch_head_bytes(2);
  codec::ChunkHeader header{};
  std::memcpy(&header, bad.data() + first_chunk, sizeof header);
  ASSERT_NE(header.mode, codec::kRaw);
  header.escapes += 16;
  std::memcpy(bad.data() + first_chunk, &header, sizeof header);
  EXPECT_THROW(codec::decode_batch(bad.data(), bad.size(), output.data(), input.size()),
               InvalidArgument);
  // A truncated batch.
  EXPECT_THROW(codec::decode_batch(stored.bytes.data(), stored.bytes.size() - 16, output.data(),
                                   input.size()),
               InvalidArgument);
}

}  // namespace
}  // namespace tms
