// GPU kernels of the compressed backup format (src/codec/format.h).
//
// Built to PTX by scripts/gen_codec_ptx.sh and checked in as
// src/codec/codec_ptx.cpp, so building the library needs no CUDA
// toolkit; CudaDriver loads the PTX with cuModuleLoadData. One thread block
// per chunk; the block count of a launch is chunk_count(size). Every kernel
// writes the bytes that the CPU reference codec (cpu_codec.cpp) writes.
#include <cstdint>

#include "codec/codec_ptx.h"
#include "codec/format.h"

namespace {

using namespace tms::codec;

constexpr int kThreads = static_cast<int>(kKernelThreads);
constexpr int kWarps = kThreads / 32;

struct Analysis {
  std::uint32_t counts[2][256];
  std::uint8_t rank_of[2][256];
  std::uint8_t symbol_at[2][256];
  std::uint32_t covered[2][kMaxCodeBits + 1];
  Choice choice;
};

// The groups of 8 words thread `t` owns: a contiguous range, so escapes come
// out in word order after a block scan.
struct Range {
  std::uint32_t begin;
  std::uint32_t end;
};

__device__ Range groups_of_thread(std::uint32_t groups) {
  const std::uint32_t per_thread = (groups + kThreads - 1) / kThreads;
  const std::uint32_t begin = min(groups, threadIdx.x * per_thread);
  return {begin, min(groups, begin + per_thread)};
}

__device__ void load_group(const std::uint8_t* input, std::uint32_t group,
                           std::uint16_t (&words)[8]) {
  const uint4 v = reinterpret_cast<const uint4*>(input)[group];
  const std::uint32_t parts[4] = {v.x, v.y, v.z, v.w};
  for (int i = 0; i < 4; ++i) {
    words[2 * i] = static_cast<std::uint16_t>(parts[i] & 0xffff);
    words[2 * i + 1] = static_cast<std::uint16_t>(parts[i] >> 16);
  }
}

// Exclusive prefix sum over the block; `scratch` holds kWarps values.
__device__ std::uint32_t block_exclusive_scan(std::uint32_t value, std::uint32_t* scratch,
                                              std::uint32_t* total) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  std::uint32_t inclusive = value;
  for (int d = 1; d < 32; d <<= 1) {
    const std::uint32_t other = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += other;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  std::uint32_t warp_base = 0;
  std::uint32_t sum = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) warp_base += scratch[w];
    sum += scratch[w];
  }
  __syncthreads();
  if (total != nullptr) *total = sum;
  return warp_base + inclusive - value;
}

// Where chunk blockIdx.x starts in its batch: the size table plus the sizes
// of the chunks before it.
__device__ std::uint64_t chunk_position(const std::uint32_t* sizes, std::uint32_t chunks,
                                        std::uint32_t* scratch) {
  std::uint32_t partial = 0;
  for (std::uint32_t c = threadIdx.x; c < blockIdx.x; c += kThreads) partial += sizes[c];
  std::uint32_t total = 0;
  block_exclusive_scan(partial, scratch, &total);
  return batch_head_bytes(chunks) + total;
}

// Histograms of both splits, ranking and the choice of the chunk at `input`.
__device__ void analyse(const std::uint8_t* input, std::uint32_t size, Analysis& a,
                        std::uint32_t (&warp_counts)[kWarps][2][256]) {
  if (size % 16 != 0) {
    if (threadIdx.x == 0) {
      const std::uint32_t none[2][kMaxCodeBits + 1] = {};
      a.choice = choose(size, none);
    }
    __syncthreads();
    return;
  }
  for (std::uint32_t i = threadIdx.x; i < kWarps * 2 * 256; i += kThreads) {
    (&warp_counts[0][0][0])[i] = 0;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const Range range = groups_of_thread(size / 16);
  for (std::uint32_t g = range.begin; g < range.end; ++g) {
    std::uint16_t words[8];
    load_group(input, g, words);
    for (int j = 0; j < 8; ++j) {
      atomicAdd(&warp_counts[warp][0][symbol_of(kExponent, words[j])], 1u);
      atomicAdd(&warp_counts[warp][1][symbol_of(kHighByte, words[j])], 1u);
    }
  }
  __syncthreads();
  const std::uint32_t s = threadIdx.x;
  for (int m = 0; m < 2; ++m) {
    std::uint32_t sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += warp_counts[w][m][s];
    a.counts[m][s] = sum;
  }
  __syncthreads();
  for (int m = 0; m < 2; ++m) {
    const std::uint32_t mine = a.counts[m][s];
    std::uint32_t r = 0;
    for (std::uint32_t o = 0; o < 256; ++o) {
      const std::uint32_t theirs = a.counts[m][o];
      r += (theirs > mine || (theirs == mine && o < s)) ? 1u : 0u;
    }
    a.rank_of[m][s] = static_cast<std::uint8_t>(r);
    a.symbol_at[m][r] = static_cast<std::uint8_t>(s);
  }
  __syncthreads();
  if (threadIdx.x < 2 * kMaxCodeBits) {
    const std::uint32_t m = threadIdx.x / kMaxCodeBits;
    const std::uint32_t k = threadIdx.x % kMaxCodeBits + 1;
    std::uint32_t sum = 0;
    for (std::uint32_t r = 0; r < table_entries(k); ++r) sum += a.counts[m][a.symbol_at[m][r]];
    a.covered[m][k] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) a.choice = choose(size, a.covered);
  __syncthreads();
}

__device__ std::uint32_t chunk_input_bytes(std::uint64_t size) {
  const std::uint64_t offset = std::uint64_t{blockIdx.x} * kChunkBytes;
  return static_cast<std::uint32_t>(min(std::uint64_t{kChunkBytes}, size - offset));
}

__device__ void copy_bytes(std::uint8_t* dst, const std::uint8_t* src, std::uint32_t size) {
  if (size % 16 == 0) {
    for (std::uint32_t i = threadIdx.x; i < size / 16; i += kThreads) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else {
    for (std::uint32_t i = threadIdx.x; i < size; i += kThreads) dst[i] = src[i];
  }
}

}  // namespace

// Stored size of every chunk of [input, input + size) into sizes[chunk].
extern "C" __global__ void __launch_bounds__(kThreads)
    tms_codec_measure(const std::uint8_t* input, std::uint64_t size, std::uint32_t* sizes) {
  __shared__ Analysis a;
  __shared__ std::uint32_t warp_counts[kWarps][2][256];
  const std::uint8_t* chunk = input + std::uint64_t{blockIdx.x} * kChunkBytes;
  analyse(chunk, chunk_input_bytes(size), a, warp_counts);
  if (threadIdx.x == 0) sizes[blockIdx.x] = a.choice.stored_bytes;
}

// One batch (size <= kBatchBytes) into `output`; `sizes` are the batch's
// chunk sizes from tms_codec_measure.
extern "C" __global__ void __launch_bounds__(kThreads)
    tms_codec_encode(const std::uint8_t* input, std::uint64_t size, const std::uint32_t* sizes,
                     std::uint8_t* output) {
  __shared__ Analysis a;
  __shared__ std::uint32_t warp_counts[kWarps][2][256];
  __shared__ std::uint8_t code_of[256];
  __shared__ std::uint32_t scratch[kWarps];
  const std::uint32_t chunks = chunk_count(size);
  const std::uint8_t* in = input + std::uint64_t{blockIdx.x} * kChunkBytes;
  const std::uint32_t in_bytes = chunk_input_bytes(size);
  std::uint8_t* out = output + chunk_position(sizes, chunks, scratch);
  analyse(in, in_bytes, a, warp_counts);
  const Choice choice = a.choice;

  if (threadIdx.x == 0) {
    reinterpret_cast<std::uint32_t*>(output)[blockIdx.x] = choice.stored_bytes;
    const ChunkHeader header{choice.mode, choice.code_bits, in_bytes, choice.escapes};
    *reinterpret_cast<ChunkHeader*>(out) = header;
  }
  if (blockIdx.x == 0) {
    for (std::uint32_t i = 4 * chunks + threadIdx.x; i < batch_head_bytes(chunks); i += kThreads) {
      output[i] = 0;
    }
  }
  std::uint8_t* body = out + kHeaderBytes;
  if (choice.mode == kRaw) {
    copy_bytes(body, in, in_bytes);
    for (std::uint32_t i = kHeaderBytes + in_bytes + threadIdx.x; i < choice.stored_bytes;
         i += kThreads) {
      out[i] = 0;
    }
    return;
  }
  const std::uint32_t m = choice.mode == kExponent ? 0 : 1;
  const std::uint32_t k = choice.code_bits;
  const std::uint32_t entries = table_entries(k);
  const std::uint32_t words = in_bytes / 2;
  {
    const std::uint32_t s = threadIdx.x;
    const std::uint32_t r = a.rank_of[m][s];
    code_of[s] = static_cast<std::uint8_t>(r < entries ? r : entries);
    if (s < align16(entries)) body[s] = s < entries ? a.symbol_at[m][s] : 0;
  }
  __syncthreads();
  std::uint8_t* residuals = body + align16(entries);
  std::uint8_t* codes = residuals + words;
  std::uint8_t* escapes = codes + words / 8 * k;

  const Range range = groups_of_thread(words / 8);
  std::uint32_t mine = 0;
  for (std::uint32_t g = range.begin; g < range.end; ++g) {
    std::uint16_t w[8];
    load_group(in, g, w);
    for (int j = 0; j < 8; ++j) mine += code_of[symbol_of(choice.mode, w[j])] == entries ? 1u : 0u;
  }
  std::uint32_t next_escape = block_exclusive_scan(mine, scratch, nullptr);
  for (std::uint32_t g = range.begin; g < range.end; ++g) {
    std::uint16_t w[8];
    load_group(in, g, w);
    std::uint64_t packed = 0;
    std::uint32_t lo = 0;
    std::uint32_t hi = 0;
    for (int j = 0; j < 8; ++j) {
      const std::uint8_t symbol = symbol_of(choice.mode, w[j]);
      const std::uint32_t residual = residual_of(choice.mode, w[j]);
      if (j < 4) {
        lo |= residual << (8 * j);
      } else {
        hi |= residual << (8 * (j - 4));
      }
      const std::uint32_t code = code_of[symbol];
      if (code == entries) escapes[next_escape++] = symbol;
      packed |= std::uint64_t{code} << (j * k);
    }
    reinterpret_cast<uint2*>(residuals)[g] = make_uint2(lo, hi);
    for (std::uint32_t b = 0; b < k; ++b)
      codes[g * k + b] = static_cast<std::uint8_t>(packed >> (8 * b));
  }
  if (threadIdx.x == 0) {
    const std::uint32_t end = static_cast<std::uint32_t>(escapes - out) + choice.escapes;
    for (std::uint32_t i = end; i < choice.stored_bytes; ++i) out[i] = 0;
  }
}

// One batch written by tms_codec_encode (`stored`) into `size` bytes at `output`.
extern "C" __global__ void __launch_bounds__(kThreads)
    tms_codec_decode(const std::uint8_t* stored, std::uint8_t* output, std::uint64_t size) {
  __shared__ std::uint8_t table[128];
  __shared__ std::uint32_t scratch[kWarps];
  const std::uint32_t chunks = chunk_count(size);
  const std::uint8_t* in =
      stored + chunk_position(reinterpret_cast<const std::uint32_t*>(stored), chunks, scratch);
  std::uint8_t* out = output + std::uint64_t{blockIdx.x} * kChunkBytes;
  const ChunkHeader header = *reinterpret_cast<const ChunkHeader*>(in);
  const std::uint8_t* body = in + kHeaderBytes;
  if (header.mode == kRaw) {
    copy_bytes(out, body, header.input_bytes);
    return;
  }
  const std::uint32_t k = header.code_bits;
  const std::uint32_t entries = table_entries(k);
  const std::uint32_t words = header.input_bytes / 2;
  if (threadIdx.x < entries) table[threadIdx.x] = body[threadIdx.x];
  __syncthreads();
  const std::uint8_t* residuals = body + align16(entries);
  const std::uint8_t* codes = residuals + words;
  const std::uint8_t* escapes = codes + words / 8 * k;
  const std::uint32_t mask = (1u << k) - 1;
  const Range range = groups_of_thread(words / 8);

  auto packed_codes = [&](std::uint32_t g) {
    std::uint64_t packed = 0;
    for (std::uint32_t b = 0; b < k; ++b) packed |= std::uint64_t{codes[g * k + b]} << (8 * b);
    return packed;
  };
  std::uint32_t mine = 0;
  for (std::uint32_t g = range.begin; g < range.end; ++g) {
    const std::uint64_t packed = packed_codes(g);
    for (int j = 0; j < 8; ++j)
      mine += (static_cast<std::uint32_t>(packed >> (j * k)) & mask) == entries ? 1u : 0u;
  }
  std::uint32_t next_escape = block_exclusive_scan(mine, scratch, nullptr);
  for (std::uint32_t g = range.begin; g < range.end; ++g) {
    const std::uint64_t packed = packed_codes(g);
    const uint2 r = reinterpret_cast<const uint2*>(residuals)[g];
    std::uint32_t parts[4] = {0, 0, 0, 0};
    for (int j = 0; j < 8; ++j) {
      const std::uint32_t code = static_cast<std::uint32_t>(packed >> (j * k)) & mask;
      const std::uint8_t symbol = code == entries ? escapes[next_escape++] : table[code];
      const std::uint8_t residual =
          static_cast<std::uint8_t>((j < 4 ? r.x >> (8 * j) : r.y >> (8 * (j - 4))) & 0xff);
      parts[j / 2] |= std::uint32_t{word_of(header.mode, symbol, residual)} << (16 * (j % 2));
    }
    reinterpret_cast<uint4*>(out)[g] = make_uint4(parts[0], parts[1], parts[2], parts[3]);
  }
}
