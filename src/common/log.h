// Minimal leveled logging to stderr. The level comes from TMS_LOG_LEVEL
// (parsed in config/env_config.cpp); the Python package has its own logger.
#pragma once

#include <string>
#include <string_view>

namespace tms {

enum class LogLevel { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

void set_log_level(LogLevel level);
[[nodiscard]] bool log_enabled(LogLevel level);
/// Words added to every line's prefix, e.g. "rank 3" under torchrun, so that
/// the lines of many processes in one log can be told apart. Empty: none.
void set_log_context(std::string_view context);
/// Writes one line "[torch_memory_saver LEVEL context] message" if `level`
/// is enabled, with control characters of `message` escaped. Takes no lock
/// of its own (safe in a fork()ed child).
void log(LogLevel level, std::string_view message) noexcept;
/// `text` with control characters written as \n, \r, \t or \xNN.
[[nodiscard]] std::string escape_control_characters(std::string_view text);

}  // namespace tms
