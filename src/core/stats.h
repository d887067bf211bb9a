// Per (tag, device) statistics the engine reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tms {

struct TagDeviceStats {
  std::string tag;
  int device = 0;
  std::size_t allocations = 0;
  std::size_t active_bytes = 0;       ///< rounded sizes of active allocations
  std::size_t paused_bytes = 0;       ///< rounded sizes of paused allocations
  std::size_t backup_bytes = 0;       ///< host memory held for backups (incl. retained)
  std::size_t disk_backup_bytes = 0;  ///< bytes of paused allocations held in backup files
  std::uint64_t pause_count = 0;      ///< pause calls that paused something here
  std::uint64_t resume_count = 0;     ///< resume calls that resumed something here
  double last_pause_seconds = 0;      ///< duration of the last such pause call
  double last_resume_seconds = 0;
  double last_pause_unix = 0;  ///< wall-clock time it finished (0: never)
  double last_resume_unix = 0;
};

struct EngineStats {
  std::vector<TagDeviceStats> entries;  ///< sorted by (tag, device)
  std::size_t deferred_releases = 0;    ///< resources waiting to be given back
};

/// {"driver": ..., "deferred_releases": N, "entries": [...]} as in tms.h.
std::string stats_to_json(const EngineStats& stats, std::string_view driver_name);

}  // namespace tms
