#include "backup/compressed_method.h"

#include <exception>
#include <optional>
#include <string>

#include "backup/compressed_copies.h"
#include "backup/host_method.h"
#include "common/log.h"

namespace tms {
namespace {

std::vector<CompressItem> compress_items(const std::vector<BackupTarget>& targets) {
  std::vector<CompressItem> items;
  items.reserve(targets.size());
  for (const BackupTarget& target : targets)
    items.push_back({target.device, target.base, target.bytes});
  return items;
}

}  // namespace

void CompressedMethod::prepare_allocation(int device) {
  try {
    driver_.codec_prepare(device);
  } catch (const std::exception& error) {
    try {
      log(LogLevel::kWarning, "the compressed-backup kernels could not be loaded on device " +
                                  std::to_string(device) + " yet (" + error.what() +
                                  "); the first compressed pause loads them");
    } catch (const std::exception&) {
      // The allocation goes on either way.
    }
  }
}

std::vector<std::unique_ptr<Backup>> CompressedMethod::save(
    const std::vector<BackupTarget>& targets) {
  std::optional<CompressedBackup> compressed;
  compressed.emplace(driver_, parking_, copies_, compress_items(targets));
  std::vector<std::size_t> sizes;
  sizes.reserve(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) sizes.push_back(compressed->stored_bytes(i));
  HostBatch batch = host_.acquire(host_requests(targets, sizes));
  std::vector<const HostBuffer*> outputs;
  outputs.reserve(batch.buffers.size());
  for (const HostBuffer& buffer : batch.buffers) outputs.push_back(&buffer);
  compressed->write(outputs);
  compressed.reset();  // its device scratch goes back before the unmap
  batch.wait_all();

  std::vector<std::unique_ptr<Backup>> saved;
  saved.reserve(targets.size());
  for (HostBuffer& buffer : batch.buffers) {
    saved.push_back(std::make_unique<CompressedHostBackup>(std::move(buffer)));
  }
  return saved;
}

void CompressedMethod::restore(const std::vector<BackupTarget>& targets) {
  std::vector<const HostBuffer*> sources;
  sources.reserve(targets.size());
  // A record of this kind only ever holds a backup this method made.
  for (const BackupTarget& target : targets) {
    sources.push_back(&static_cast<const CompressedHostBackup*>(target.current)->stored());
  }
  restore_compressed(driver_, parking_, copies_, compress_items(targets), sources);
}

}  // namespace tms
