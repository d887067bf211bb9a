#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <string>

namespace tms {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kWarning)};

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "ERROR";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kDebug:
      return "DEBUG";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool log_enabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(); }

void log(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  // One fprintf per line keeps lines from different threads whole.
  std::fprintf(stderr, "[torch_memory_saver %s] %.*s\n", level_name(level),
               static_cast<int>(message.size()), message.data());
}

}  // namespace tms
