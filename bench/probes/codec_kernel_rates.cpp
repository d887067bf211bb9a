// Speed of the compressed-backup kernels alone, on the CUDA driver: where
// the time of a compressed pause or resume goes besides the copies.
//
//   tms_codec_kernel_rates [GiB=1]
//
// Fills device memory with bf16 normal(0, 0.02) words, then times (best of
// 3, one stream) the measure pass over all of it, the encode of every batch
// and the decode of every batch, and checks that decoding gives the input
// back. Rates are in input (uncompressed) bytes per second.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "codec/format.h"
#include "common/errors.h"
#include "common/sizes.h"
#include "driver/cuda_driver.h"

namespace {

using tms::DevicePtr;

struct DeviceRange {
  tms::Driver& driver;
  std::size_t size;
  DevicePtr va;
  tms::PhysicalHandle handle;
  DeviceRange(tms::Driver& d, std::size_t bytes) : driver(d), size(bytes) {
    const std::size_t granularity = driver.granularity(0);
    size = tms::round_up(bytes, granularity);
    va = driver.reserve(size, granularity);
    handle = driver.create_physical(0, size);
    driver.map(va, size, handle);
    driver.set_access(va, size, 0);
  }
  ~DeviceRange() {
    driver.unmap(va, size);
    driver.release_physical(handle);
    driver.free_reservation(va, size);
  }
};

template <typename F>
double best_seconds(tms::Driver& driver, tms::StreamHandle stream, F&& work) {
  double best = 1e30;
  for (int repeat = 0; repeat < 3; ++repeat) {
    driver.synchronize_stream(0, stream);
    const auto start = std::chrono::steady_clock::now();
    work();
    driver.synchronize_stream(0, stream);
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace codec = tms::codec;
  const std::size_t bytes =
      static_cast<std::size_t>((argc > 1 ? std::atof(argv[1]) : 1.0) * (1 << 30)) / 16 * 16;
  try {
    tms::CudaDriver driver;
    tms::StreamHandle stream = driver.create_stream(0);
    DeviceRange input(driver, bytes);
    DeviceRange output(driver, bytes);
    const std::size_t batches = codec::batch_count(bytes);
    DeviceRange sizes(driver, codec::chunk_count(bytes) * 4);
    DeviceRange stored(driver, batches * codec::max_batch_bytes(codec::kBatchBytes));

    std::vector<std::uint16_t> host(bytes / 2);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (auto& word : host) {
      std::uint32_t bits = 0;
      const float value = normal(rng);
      std::memcpy(&bits, &value, 4);
      word = static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
    driver.copy_to_device_async(0, input.va, host.data(), bytes, stream);

    const double measure = best_seconds(
        driver, stream, [&] { driver.codec_measure_async(0, input.va, bytes, sizes.va, stream); });
    std::vector<std::uint32_t> chunk_sizes(codec::chunk_count(bytes));
    driver.copy_to_host_async(0, chunk_sizes.data(), sizes.va, chunk_sizes.size() * 4, stream);
    driver.synchronize_stream(0, stream);
    std::uint64_t stored_bytes = 0;
    for (std::uint32_t size : chunk_sizes) stored_bytes += size;
    auto batch_input = [&](std::size_t b) {
      return std::min<std::size_t>(codec::kBatchBytes, bytes - b * codec::kBatchBytes);
    };
    auto slot = [&](std::size_t b) {
      return stored.va + b * codec::max_batch_bytes(codec::kBatchBytes);
    };
    const double encode = best_seconds(driver, stream, [&] {
      for (std::size_t b = 0; b < batches; ++b) {
        driver.codec_encode_async(0, input.va + b * codec::kBatchBytes, batch_input(b),
                                  sizes.va + b * codec::kChunksPerBatch * 4, slot(b), stream);
      }
    });
    const double decode = best_seconds(driver, stream, [&] {
      for (std::size_t b = 0; b < batches; ++b) {
        driver.codec_decode_async(0, slot(b), output.va + b * codec::kBatchBytes, batch_input(b),
                                  stream);
      }
    });
    std::vector<std::uint16_t> back(bytes / 2);
    driver.copy_to_host_async(0, back.data(), output.va, bytes, stream);
    driver.synchronize_stream(0, stream);
    const bool exact = std::memcmp(back.data(), host.data(), bytes) == 0;
    const double gb = static_cast<double>(bytes) / 1e9;
    std::printf(
        "{\"bytes\": %zu, \"stored_ratio\": %.4f, \"measure_GBps\": %.1f, \"encode_GBps\": %.1f, "
        "\"measure_plus_encode_GBps\": %.1f, \"decode_GBps\": %.1f, \"exact\": %s}\n",
        bytes, static_cast<double>(stored_bytes) / static_cast<double>(bytes), gb / measure,
        gb / encode, gb / (measure + encode), gb / decode, exact ? "true" : "false");
    driver.destroy_stream(0, stream);
    return exact ? 0 : 1;
  } catch (const tms::Error& error) {
    std::fprintf(stderr, "tms_codec_kernel_rates: %s\n", error.what());
    return 2;
  }
}
