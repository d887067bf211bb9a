#include "core/stats.h"

#include <cstdio>
#include <string_view>
#include <type_traits>

namespace tms {
namespace {

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// One JSON value per field type of TMS_TAG_DEVICE_STATS_FIELDS.
void append_value(std::string& out, const std::string& text) { append_json_string(out, text); }

template <typename Integer>
requires std::is_integral_v<Integer>
void append_value(std::string& out, Integer value) { out += std::to_string(value); }

void append_value(std::string& out, double value) {
  // 17 significant digits: Unix times keep their microseconds.
  char text[40];
  std::snprintf(text, sizeof(text), "%.17g", value);
  out += text;
}

}  // namespace

std::string stats_to_json(const EngineStats& stats, std::string_view driver_name) {
  std::string out = "{\"driver\": ";
  append_json_string(out, driver_name);
  out += ", \"deferred_releases\": " + std::to_string(stats.deferred_releases);
  out += ", \"entries\": [";
  bool first = true;
  for (const TagDeviceStats& entry : stats.entries) {
    if (!first) out += ", ";
    first = false;
    const char* separator = "{";
#define TMS_STATS_FIELD_JSON(type, name) \
  out += separator;                      \
  out += "\"" #name "\": ";              \
  append_value(out, entry.name);         \
  separator = ", ";
    TMS_TAG_DEVICE_STATS_FIELDS(TMS_STATS_FIELD_JSON)
#undef TMS_STATS_FIELD_JSON
    out += "}";
  }
  out += "]}";
  return out;
}

}  // namespace tms
