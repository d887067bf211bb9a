// Which records a tag selects, and how the engine's messages name tags and
// allocations: shared by the transactions (engine.cpp) and the restores
// behind non-blocking resumes (engine_restores.cpp).
#pragma once

#include <optional>
#include <string>

#include "common/errors.h"  // hex_address
#include "core/allocation.h"

namespace tms {

/// nullopt selects every tag.
inline bool tag_matches(const std::optional<std::string>& wanted, const std::string& tag) {
  return !wanted.has_value() || *wanted == tag;
}

/// "tag 'kv'", or "all tags" for nullopt.
inline std::string describe_tag(const std::optional<std::string>& tag) {
  return tag ? "tag '" + *tag + "'" : std::string("all tags");
}

/// "allocation 0x7f0000000000 of 4194304 bytes (tag 'kv', device 0)".
inline std::string describe_allocation(const Allocation& allocation) {
  return "allocation " + hex_address(allocation.base) + " of " +
         std::to_string(allocation.requested_size) + " bytes (tag '" + allocation.tag +
         "', device " + std::to_string(allocation.device) + ")";
}

}  // namespace tms
