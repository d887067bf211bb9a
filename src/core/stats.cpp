#include "core/stats.h"

#include <cstdio>
#include <string_view>

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

void append_number(std::string& out, double value) {
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
    out += "{\"tag\": ";
    append_json_string(out, entry.tag);
    out += ", \"device\": " + std::to_string(entry.device);
    out += ", \"allocations\": " + std::to_string(entry.allocations);
    out += ", \"active_bytes\": " + std::to_string(entry.active_bytes);
    out += ", \"paused_bytes\": " + std::to_string(entry.paused_bytes);
    out += ", \"backup_bytes\": " + std::to_string(entry.backup_bytes);
    out += ", \"disk_backup_bytes\": " + std::to_string(entry.disk_backup_bytes);
    out += ", \"pause_count\": " + std::to_string(entry.pause_count);
    out += ", \"resume_count\": " + std::to_string(entry.resume_count);
    out += ", \"last_pause_seconds\": ";
    append_number(out, entry.last_pause_seconds);
    out += ", \"last_resume_seconds\": ";
    append_number(out, entry.last_resume_seconds);
    out += ", \"last_pause_unix\": ";
    append_number(out, entry.last_pause_unix);
    out += ", \"last_resume_unix\": ";
    append_number(out, entry.last_resume_unix);
    out += "}";
  }
  out += "]}";
  return out;
}

}  // namespace tms
