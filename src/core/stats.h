// Per (tag, device) statistics the engine reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tms {

// The fields of one statistics entry, written once as (type, name): the
// struct below and its JSON (stats_to_json) are made from this list. The
// comment of tms_stats_json in tms.h and Python's TagStats name the same
// fields in the same order (tests/python/test_c_python_agree.py checks both
// against the JSON).
#define TMS_TAG_DEVICE_STATS_FIELDS(X)                                                  \
  X(std::string, tag)                                                                   \
  X(int, device)                                                                        \
  X(std::size_t, allocations)                                                           \
  X(std::size_t, active_bytes)      /* rounded sizes of active allocations */           \
  X(std::size_t, paused_bytes)      /* rounded sizes of paused allocations */           \
  X(std::size_t, broken_bytes)      /* rounded sizes of unusable ones (kBroken) */      \
  X(std::size_t, backup_bytes)      /* host memory held for backups (incl. retained) */ \
  X(std::size_t, disk_backup_bytes) /* bytes of paused allocations in backup files */   \
  X(std::uint64_t, pause_count)     /* pause calls that paused something here */        \
  X(std::uint64_t, resume_count)    /* resume calls that resumed something here */      \
  X(double, last_pause_seconds)     /* duration of the last such pause call */          \
  X(double, last_resume_seconds)                                                        \
  X(double, last_pause_unix) /* wall-clock time it finished (0: never) */               \
  X(double, last_resume_unix)

struct TagDeviceStats {
#define TMS_STATS_FIELD(type, name) type name{};
  TMS_TAG_DEVICE_STATS_FIELDS(TMS_STATS_FIELD)
#undef TMS_STATS_FIELD
};

struct EngineStats {
  std::vector<TagDeviceStats> entries;  ///< sorted by (tag, device)
  std::size_t deferred_releases = 0;    ///< resources waiting to be given back
};

/// {"driver": ..., "deferred_releases": N, "entries": [...]} as in tms.h.
std::string stats_to_json(const EngineStats& stats, std::string_view driver_name);

}  // namespace tms
