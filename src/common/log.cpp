#include "common/log.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/errors.h"

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

void write_line(LogLevel level, const char* prefix, const char* text) noexcept {
  // One fprintf per line keeps lines from different threads whole.
  std::fprintf(stderr, "[torch_memory_saver %s%s] %s\n", level_name(level), prefix, text);
}

const char* context_prefix() noexcept {
  const std::string* context = g_context.load();
  return context != nullptr ? context->c_str() : "";
}

struct QueuedLine {
  LogLevel level;
  std::string text;  // escaped
};

// The lines waiting for the sink and the one thread that hands them over.
// Leaked, like the context: lines can come during static destruction, and
// the log thread may still wait on the condition variables then.
struct SinkQueue {
  std::mutex mutex;
  std::condition_variable queued;     // a line was queued, or lines were dropped
  std::condition_variable delivered;  // a delivery finished
  std::deque<QueuedLine> lines;
  LogSink sink = nullptr;
  bool thread_started = false;
  std::thread::id thread_id;
  std::uint64_t accepted = 0;  // lines queued so far
  std::uint64_t handed = 0;    // of those, handed to the sink or stderr
  std::uint64_t dropped = 0;   // lines dropped (queue full) and not yet reported
  std::uint64_t calls_started = 0;
  std::uint64_t calls_finished = 0;
};

// Whether a sink is installed: log() reads it without a lock, so that lines
// go to stderr without ever touching the queue when nobody installed one.
std::atomic<bool> g_sink_installed{false};
std::atomic<SinkQueue*> g_queue{new SinkQueue};

// The child of fork() has none of the parent's threads: not the log thread,
// nor one that may have held the queue's lock at the fork. It starts with a
// new, empty queue and no sink (a Python sink is installed again by the
// package's own fork handler; a C sink may be for the parent only).
void on_fork_child() noexcept {
  g_sink_installed.store(false);
  SinkQueue* fresh = nullptr;
  try {
    fresh = new SinkQueue;
  } catch (const std::exception&) {
    // No memory: the child logs to stderr and cannot install a sink.
  }
  g_queue.store(fresh);
}
const bool g_fork_handler_registered = pthread_atfork(nullptr, nullptr, on_fork_child) == 0;

void deliver_forever(SinkQueue& queue) noexcept {
  std::unique_lock lock(queue.mutex);
  for (;;) {
    queue.queued.wait(lock, [&] { return !queue.lines.empty() || queue.dropped > 0; });
    QueuedLine line{LogLevel::kWarning, {}};
    bool counted = false;
    try {
      if (queue.dropped > 0) {
        line.text =
            std::to_string(queue.dropped) + " log lines were dropped: the log sink fell behind";
        queue.dropped = 0;
      } else {
        line = std::move(queue.lines.front());
        queue.lines.pop_front();
        counted = true;
      }
    } catch (const std::exception&) {
      // No memory for the report: it is dropped with the lines it counts.
      queue.dropped = 0;
      continue;
    }
    const LogSink sink = queue.sink;
    ++queue.calls_started;
    lock.unlock();
    const char* prefix = context_prefix();
    bool taken = false;
    if (sink != nullptr) {
      try {
        // The context leads the message ("rank 3: ..."), as it leads a
        // stderr line: the lines of many ranks can still be told apart.
        const std::string message =
            *prefix == '\0' ? line.text : std::string(prefix + 1) + ": " + line.text;
        taken = sink(static_cast<int>(line.level), message.c_str()) != 0;
      } catch (const std::exception&) {
        // No memory for the message: stderr takes the line.
      }
    }
    if (!taken) write_line(line.level, prefix, line.text.c_str());
    lock.lock();
    ++queue.calls_finished;
    if (counted) ++queue.handed;
    queue.delivered.notify_all();
  }
}

// Queues `text` for the sink; false when no sink is installed (any more).
bool queue_line(LogLevel level, std::string&& text) noexcept {
  SinkQueue* queue = g_queue.load();
  if (queue == nullptr) return false;
  try {
    std::lock_guard lock(queue->mutex);
    if (queue->sink == nullptr) return false;
    if (queue->lines.size() >= kMaxQueuedLogLines) {
      ++queue->dropped;
    } else {
      queue->lines.push_back({level, std::move(text)});
      ++queue->accepted;
    }
    queue->queued.notify_one();
    return true;
  } catch (const std::exception&) {
    // No memory for the line (or the lock failed): stderr still takes it.
    return false;
  }
}

}  // namespace

void set_log_sink(LogSink sink) {
  SinkQueue* queue = g_queue.load();
  if (queue == nullptr) throw InvalidState("no memory for the log queue in this fork()ed child");
  if (!g_fork_handler_registered) {
    throw InvalidState("pthread_atfork failed; a log sink cannot be guarded across fork()");
  }
  std::unique_lock lock(queue->mutex);
  if (sink != nullptr && !queue->thread_started) {
    std::thread thread;
    try {
      thread = std::thread([queue] { deliver_forever(*queue); });
    } catch (const std::exception& error) {
      throw InvalidState(std::string("could not start the thread that delivers log lines: ") +
                         error.what());
    }
    queue->thread_id = thread.get_id();
    thread.detach();  // waits for lines until the process ends, like the engine lives
    queue->thread_started = true;
  }
  queue->sink = sink;
  g_sink_installed.store(sink != nullptr);
  if (std::this_thread::get_id() == queue->thread_id) return;
  // A call of the previous sink that started before the change must return.
  const std::uint64_t started = queue->calls_started;
  queue->delivered.wait(lock, [&] { return queue->calls_finished >= started; });
}

void flush_log() noexcept {
  SinkQueue* queue = g_queue.load();
  if (queue == nullptr) return;
  try {
    std::unique_lock lock(queue->mutex);
    if (!queue->thread_started || std::this_thread::get_id() == queue->thread_id) return;
    const std::uint64_t target = queue->accepted;
    queue->delivered.wait(lock, [&] { return queue->handed >= target; });
  } catch (const std::exception&) {
    // The lock failed: nothing to wait on.
  }
}

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
  try {
    // Messages carry user text (tags, paths): escaped, a newline in it
    // cannot forge a line.
    std::string text = escape_control_characters(message);
    if (g_sink_installed.load() && queue_line(level, std::move(text))) return;
    // queue_line leaves `text` alone when it returns false.
    write_line(level, context_prefix(), text.c_str());
  } catch (...) {
    // No memory to escape the message: say so rather than throw from the
    // release and unwinding paths that log.
    write_line(level, context_prefix(), "(a message was dropped: out of memory)");
  }
}

}  // namespace tms
