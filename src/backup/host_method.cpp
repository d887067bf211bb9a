#include "backup/host_method.h"

#include <map>
#include <string>

namespace tms {

void HostBackup::release_into(Released& released) noexcept {
  if (!buffer_) return;
  if (buffer_.use_count() == 1) released.host.push_back(std::move(*buffer_));
  buffer_.reset();
}

std::vector<HostRequest> host_requests(const std::vector<BackupTarget>& targets,
                                       const std::vector<std::size_t>& sizes) {
  std::map<std::string, std::size_t> group_of_tag;
  std::vector<HostRequest> requests;
  requests.reserve(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const std::size_t group =
        group_of_tag.try_emplace(targets[i].tag, group_of_tag.size()).first->second;
    requests.push_back({sizes[i], targets[i].host_memory, group});
  }
  return requests;
}

std::vector<std::unique_ptr<Backup>> HostMethod::save(const std::vector<BackupTarget>& targets) {
  std::vector<BackupTarget> fresh;
  std::vector<std::size_t> sizes;
  for (const BackupTarget& target : targets) {
    if (target.current != nullptr) continue;
    fresh.push_back(target);
    sizes.push_back(target.bytes);
  }
  HostBatch batch = host_.acquire(host_requests(fresh, sizes));

  std::vector<std::shared_ptr<const HostBuffer>> retained;  // alive until the copies are done
  std::vector<CopyItem> copies;
  copies.reserve(targets.size());
  std::size_t next_fresh = 0;
  for (const BackupTarget& target : targets) {
    const HostBuffer* buffer = nullptr;
    if (target.current != nullptr) {
      buffer = retained.emplace_back(target.current->host_copy()).get();
    } else {
      buffer = &batch.buffers[next_fresh++];
    }
    copies.push_back({target.device, target.base, buffer->data(), target.bytes, buffer});
  }
  copies_.to_host(copies);
  batch.wait_all();

  std::vector<std::unique_ptr<Backup>> saved;
  saved.reserve(targets.size());
  next_fresh = 0;
  for (const BackupTarget& target : targets) {
    if (target.current != nullptr) {
      saved.push_back(nullptr);  // refreshed in place
    } else {
      saved.push_back(std::make_unique<HostBackup>(std::move(batch.buffers[next_fresh++])));
    }
  }
  return saved;
}

}  // namespace tms
