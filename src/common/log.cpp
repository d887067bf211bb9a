#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>

namespace tms {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kWarning)};
std::mutex g_context_mutex;
std::string g_context;  // guarded by g_context_mutex; " rank 3" (with its leading space) or ""

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

void set_log_context(std::string_view context) {
  std::lock_guard lock(g_context_mutex);
  // Built in place: `" " + std::string(context)` trips GCC 12's -Wrestrict
  // false positive at -O3 (inlined operator+).
  g_context.assign(context.empty() ? 0 : 1, ' ');
  g_context.append(context);
}

void log(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  // One fprintf per line keeps lines from different threads whole; the lock
  // only guards the context (lines are rare: transitions and problems).
  std::lock_guard lock(g_context_mutex);
  std::fprintf(stderr, "[torch_memory_saver %s%s] %.*s\n", level_name(level), g_context.c_str(),
               static_cast<int>(message.size()), message.data());
}

}  // namespace tms
