// Minimal leveled logging to stderr. The level comes from TMS_LOG_LEVEL
// (parsed in config/env_config.cpp); the Python package has its own logger.
#pragma once

#include <string_view>

namespace tms {

enum class LogLevel { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

void set_log_level(LogLevel level);
[[nodiscard]] bool log_enabled(LogLevel level);
/// Writes one line "[torch_memory_saver LEVEL] message" if `level` is enabled.
void log(LogLevel level, std::string_view message);

}  // namespace tms
