#include "backup/compressed_copies.h"

#include <algorithm>
#include <cstring>

#include "backup/in_order_hand_over.h"
#include "codec/cpu_codec.h"
#include "codec/format.h"
#include "common/errors.h"
#include "common/sizes.h"

namespace tms {
namespace {

constexpr std::size_t kScratchAlign = 256;  // where each area of the scratch starts

constexpr std::size_t slot_bytes() { return codec::max_batch_bytes(codec::kBatchBytes); }

std::size_t batch_input(const CompressItem& item, std::size_t batch) {
  return std::min<std::size_t>(codec::kBatchBytes, item.size - batch * codec::kBatchBytes);
}

// Calls copy(done, piece) for consecutive pieces of [offset, offset + size)
// of `buffer` that never span two registered chunks of it (and waits for
// each chunk to be registered).
template <typename Copy>
void copy_in_extents(const HostBuffer& buffer, std::size_t offset, std::size_t size, Copy&& copy) {
  for (std::size_t done = 0, piece = 0; done < size; done += piece) {
    piece = buffer.copy_extent(offset + done, size - done);
    copy(done, piece);
  }
}

// Runs `queue`, and on failure waits for every lane of `devices` before
// rethrowing, so no kernel or copy still uses the scratch or the host memory.
template <typename Devices, typename Queue>
void run_drained(CopyPipeline& copies, const Devices& devices, Queue&& queue) {
  try {
    queue();
  } catch (...) {
    for (const auto& [device, state] : devices) copies.drain_quietly(device);
    throw;
  }
}

}  // namespace

DeviceScratch::DeviceScratch(Driver& driver, ParkingLot& parking, int device, std::size_t size)
    : size_(round_up(size, driver.granularity(device))),
      reservation_(VaReservation::reserve(driver, parking, size_, driver.granularity(device))),
      physical_(PhysicalMemory::create(driver, parking, device, size_)),
      mapping_(
          Mapping::map(driver, parking, reservation_.va(), size_, physical_.handle(), device)) {}

CompressedBackup::CompressedBackup(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                                   std::vector<CompressItem> items)
    : driver_(driver), copies_(copies), items_(std::move(items)), first_chunk_(items_.size()) {
  for (std::size_t i = 0; i < items_.size(); ++i) {
    DeviceState& state = devices_[items_[i].device];
    state.items.push_back(i);
    first_chunk_[i] = state.chunks;
    state.chunks += codec::chunk_count(items_[i].size);
  }
  const std::size_t lanes = copies_.options().streams_per_device;
  std::size_t table_offset = 0;
  std::map<int, std::size_t> table_of;
  for (auto& [device, state] : devices_) {
    state.scratch = std::make_unique<DeviceScratch>(
        driver_, parking, device, round_up(state.chunks * 4, kScratchAlign) + lanes * slot_bytes());
    table_of[device] = table_offset;
    table_offset += state.chunks;
  }
  chunk_sizes_.resize(table_offset);
  run_drained(copies_, devices_, [&] {
    for (auto& [device, state] : devices_) {
      for (std::size_t i : state.items) {
        driver_.codec_measure_async(device, items_[i].device_ptr, items_[i].size,
                                    state.scratch->base() + first_chunk_[i] * 4,
                                    copies_.stream(device, 0));
      }
      copies_.start_to_host(device, 0, chunk_sizes_.data() + table_of[device],
                            state.scratch->base(), state.chunks * 4);
    }
    for (auto& [device, state] : devices_) copies_.wait(device, 0);
  });
  batch_bytes_.resize(items_.size());
  for (auto& [device, state] : devices_) {
    for (std::size_t i : state.items) {
      const std::uint32_t* sizes = chunk_sizes_.data() + table_of[device] + first_chunk_[i];
      const std::size_t batches = codec::batch_count(items_[i].size);
      for (std::size_t b = 0; b < batches; ++b) {
        const std::uint32_t chunks = codec::chunk_count(batch_input(items_[i], b));
        std::uint64_t bytes = codec::batch_head_bytes(chunks);
        for (std::uint32_t c = 0; c < chunks; ++c) bytes += sizes[b * codec::kChunksPerBatch + c];
        batch_bytes_[i].push_back(bytes);
      }
    }
  }
}

std::size_t CompressedBackup::stored_bytes(std::size_t i) const {
  std::size_t total = 0;
  for (std::uint64_t bytes : batch_bytes_.at(i)) total += bytes;
  return total;
}

DevicePtr CompressedBackup::slot(const DeviceState& state, std::size_t lane) const {
  const std::size_t lanes = copies_.options().streams_per_device;
  return state.scratch->base() + round_up(state.chunks * 4, kScratchAlign) +
         (lane % lanes) * slot_bytes();
}

void CompressedBackup::write(const std::vector<const HostBuffer*>& targets) {
  if (targets.size() != items_.size()) throw InvalidArgument("one target per compressed item");
  run_drained(copies_, devices_, [&] {
    // Destroyed before the lanes are drained when this throws, so no work
    // handed over starts after that.
    InOrderHandOver hand_over;
    for (auto& [device, state] : devices_) {
      std::size_t lane = 0;
      for (std::size_t i : state.items) {
        const HostBuffer& target = *targets[i];
        std::size_t host_offset = 0;
        for (std::size_t b = 0; b < batch_bytes_[i].size(); ++b, ++lane) {
          const std::size_t stored = batch_bytes_[i][b];
          hand_over.add(target, host_offset, stored,
                        [this, &state, &target, device, i, b, lane, host_offset, stored] {
                          encode_batch(device, state, i, b, lane, target, host_offset, stored);
                        });
          host_offset += stored;
        }
      }
    }
    hand_over.wait();
    for (auto& [device, state] : devices_) {
      for (std::size_t lane = 0; lane < copies_.options().streams_per_device; ++lane) {
        copies_.wait(device, lane);
      }
    }
  });
}

void CompressedBackup::encode_batch(int device, const DeviceState& state, std::size_t i,
                                    std::size_t b, std::size_t lane, const HostBuffer& target,
                                    std::size_t host_offset, std::size_t stored) {
  const CompressItem& item = items_[i];
  const DevicePtr out = slot(state, lane);
  driver_.codec_encode_async(
      device, item.device_ptr + b * codec::kBatchBytes, batch_input(item, b),
      state.scratch->base() + (first_chunk_[i] + b * codec::kChunksPerBatch) * 4, out,
      copies_.stream(device, lane));
  // InOrderHandOver runs this once the whole range is registered.
  for (std::size_t done = 0, piece = 0; done < stored; done += piece) {
    piece = target.chunk_extent(host_offset + done, stored - done);
    copies_.start_to_host(device, lane, target.data() + host_offset + done, out + done, piece);
  }
}

void restore_compressed(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                        const std::vector<CompressItem>& items,
                        const std::vector<const HostBuffer*>& sources) {
  if (sources.size() != items.size()) throw InvalidArgument("one source per compressed item");
  const std::size_t lanes = copies.options().streams_per_device;
  std::map<int, std::vector<std::size_t>> by_device;
  for (std::size_t i = 0; i < items.size(); ++i) by_device[items[i].device].push_back(i);
  std::map<int, std::unique_ptr<DeviceScratch>> scratch;
  for (const auto& [device, list] : by_device) {
    try {
      scratch[device] =
          std::make_unique<DeviceScratch>(driver, parking, device, lanes * slot_bytes());
    } catch (const OutOfMemory& error) {
      throw DeviceOutOfMemory(device, error);
    }
  }
  run_drained(copies, by_device, [&] {
    for (const auto& [device, list] : by_device) {
      std::size_t lane = 0;
      for (std::size_t i : list) {
        const CompressItem& item = items[i];
        const HostBuffer& source = *sources[i];
        std::size_t host_offset = 0;
        for (std::size_t b = 0; b < codec::batch_count(item.size); ++b, ++lane) {
          const std::size_t input = batch_input(item, b);
          const std::size_t head = codec::batch_head_bytes(codec::chunk_count(input));
          if (host_offset + head > source.size()) {
            throw InvalidArgument("compressed backup is shorter than its allocation needs");
          }
          const std::size_t stored = codec::stored_batch_bytes(source.data() + host_offset, input);
          if (stored > source.size() - host_offset || stored > slot_bytes()) {
            throw InvalidArgument("compressed backup is malformed: a batch runs past its end");
          }
          const DevicePtr in = scratch[device]->base() + (lane % lanes) * slot_bytes();
          copy_in_extents(source, host_offset, stored, [&](std::size_t done, std::size_t piece) {
            copies.start_to_device(device, lane, in + done, source.data() + host_offset + done,
                                   piece);
          });
          driver.codec_decode_async(device, in, item.device_ptr + b * codec::kBatchBytes, input,
                                    copies.stream(device, lane));
          host_offset += stored;
        }
      }
    }
    for (const auto& [device, list] : by_device) {
      for (std::size_t lane = 0; lane < lanes; ++lane) copies.wait(device, lane);
    }
  });
}

}  // namespace tms
