#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tms {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kWarning)};
// " rank 3" (with its leading space) or empty. log() reads it without a
// lock, so that a line can be written in a fork()ed child whatever the
// parent's other threads held at the fork.
std::atomic<const std::string*> g_context{nullptr};

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
  // A log() on another thread may still read the old context, so every one
  // is kept (set once per process, when the engine is created; tests set a
  // few). Never destroyed: log lines can come during static destruction.
  static std::mutex mutex;
  static auto* kept = new std::vector<std::unique_ptr<const std::string>>;
  std::lock_guard lock(mutex);
  // Built in place: `" " + std::string(context)` trips GCC 12's -Wrestrict
  // false positive at -O3 (inlined operator+).
  auto text = std::make_unique<std::string>(context.empty() ? 0 : 1, ' ');
  text->append(context);
  kept->push_back(std::move(text));
  g_context.store(kept->back().get());
}

std::string escape_control_characters(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", byte);
      out += hex;
    }
  }
  return out;
}

void log(LogLevel level, std::string_view message) noexcept {
  if (!log_enabled(level)) return;
  const std::string* context = g_context.load();
  const char* prefix = context != nullptr ? context->c_str() : "";
  try {
    // One fprintf per line keeps lines from different threads whole. Messages
    // carry user text (tags, paths): escaped, a newline in it cannot forge a line.
    const std::string text = escape_control_characters(message);
    std::fprintf(stderr, "[torch_memory_saver %s%s] %s\n", level_name(level), prefix, text.c_str());
  } catch (...) {
    // No memory to escape the message: say so rather than throw from the
    // release and unwinding paths that log.
    std::fprintf(stderr, "[torch_memory_saver %s%s] (a message was dropped: out of memory)\n",
                 level_name(level), prefix);
  }
}

}  // namespace tms
