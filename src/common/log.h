// Minimal leveled logging: to stderr, or to a sink the embedding program
// installs (the Python package forwards lines to its `logging` logger). The
// level comes from TMS_LOG_LEVEL (parsed in config/env_config.cpp).
//
// Lines are logged from many places that hold engine locks (a pause or
// resume under the transition lock, background release threads under their
// queue locks), and a sink may block: a Python sink takes the GIL, which a
// Python thread may hold while it waits for one of those locks (an
// allocation through torch's allocator holds the GIL). So log() never calls
// the sink: with a sink installed it only queues the line, and one library
// thread that holds no lock hands queued lines to the sink in order.
#pragma once

#include <cstddef>
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
/// is enabled, with control characters of `message` escaped; with a sink
/// installed, queues the message for the sink instead (never blocks on the
/// sink). Without a sink it takes no lock of its own; with one, only the
/// queue's, which a fork()ed child gets fresh (the child starts without a
/// sink, so its lines go to stderr until one is installed there).
void log(LogLevel level, std::string_view message) noexcept;
/// Where lines go instead of stderr. Called on the library's log thread,
/// never while the library holds a lock, one line at a time in the order
/// they were logged, with the level (a LogLevel as int) and the message
/// (control characters escaped, led by the context as "rank 3: " if one is
/// set, without the "[torch_memory_saver LEVEL]" prefix). Returns nonzero
/// when it took the line, 0 to have the line written to stderr as without a
/// sink.
using LogSink = int (*)(int level, const char* message);
/// Installs `sink` (nullptr: stderr again) for lines logged from now on and
/// those still queued. Starts the log thread on first use (InvalidState if
/// the system refuses a thread). Returns once a call of the previous sink in
/// progress has returned, so the caller may then tear that sink down;
/// except on the log thread itself (from inside a sink), where it cannot wait.
/// Up to kMaxQueuedLogLines lines wait for the sink; more are dropped and
/// counted in a warning line.
void set_log_sink(LogSink sink);
inline constexpr std::size_t kMaxQueuedLogLines = 4096;
/// Returns once every line logged before the call has been handed to the
/// sink (or written to stderr); at once on the log thread, or without a sink.
void flush_log() noexcept;
/// `text` with control characters written as \n, \r, \t or \xNN.
[[nodiscard]] std::string escape_control_characters(std::string_view text);

}  // namespace tms
