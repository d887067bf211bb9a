#include "core/resume_pipeline.h"

#include "common/errors.h"

namespace tms {

ResumePipeline::ResumePipeline(Driver& driver, ParkingLot& parking, CopyPipeline& copies,
                               ResumePipelineOptions options)
    : driver_(driver), parking_(parking), options_(options) {
  restores_.emplace(copies, /*to_host=*/false);
}

void ResumePipeline::map_and_restore(const std::vector<Item>& items) {
  physical_.reserve(items.size());
  mappings_.reserve(items.size());
  std::vector<CopyItem> restores;
  for (std::size_t begin = 0; begin < items.size();) {
    // [begin, end): at least one item, then up to the batch limits.
    std::size_t end = begin;
    std::size_t bytes = 0;
    while (end < items.size() && (end == begin || (bytes < options_.batch_bytes &&
                                                   end - begin < options_.batch_allocations))) {
      bytes += items[end++].size;
    }
    for (std::size_t i = begin; i < end; ++i) {
      try {
        physical_.push_back(
            PhysicalMemory::create(driver_, parking_, items[i].device, items[i].size));
      } catch (const OutOfMemory& error) {
        throw DeviceOutOfMemory(items[i].device, error);
      }
    }
    restores.clear();
    for (std::size_t i = begin; i < end; ++i) {
      const Item& item = items[i];
      mappings_.push_back(Mapping::map(driver_, parking_, item.base, item.size,
                                       physical_[i].handle(), item.device));
      if (item.backup != nullptr) {
        restores.push_back(
            {item.device, item.base, item.backup->data(), item.restore_bytes, item.backup});
      }
    }
    // Runs on the copy engine while the next batch is created and mapped.
    restores_->add(restores);
    begin = end;
  }
}

void ResumePipeline::wait_restores() { restores_->wait(); }

std::vector<LaneMark> ResumePipeline::detach_restores() { return restores_->detach(); }

void ResumePipeline::unwind() noexcept {
  restores_.reset();  // waits for copies still in flight into the mappings
  mappings_.clear();
  physical_.clear();
}

PhysicalHandle ResumePipeline::commit(std::size_t i) noexcept {
  mappings_[i].release();
  return physical_[i].release();
}

}  // namespace tms
