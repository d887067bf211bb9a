// The log sink: lines reach an installed sink on the library's log thread,
// in order, never while the logging thread is inside log(); without a sink
// (and in a fork()ed child) they go to stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/log.h"

namespace tms {
namespace {

// What the sink under test saw. One sink function for all tests, as a C
// sink would be; the tests reset it.
struct Seen {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::pair<int, std::string>> lines;
  std::vector<std::thread::id> threads;
  bool take = true;            // what the sink returns
  bool gate_open = true;       // the sink waits for it
  bool entered = false;        // the sink was called
  std::mutex* held = nullptr;  // a lock the sink takes, as Python's GIL
};
Seen g_seen;

int record_line(int level, const char* message) {
  std::unique_lock lock(g_seen.mutex);
  g_seen.entered = true;
  g_seen.changed.notify_all();
  g_seen.changed.wait(lock, [] { return g_seen.gate_open; });
  if (std::mutex* held = g_seen.held) {
    lock.unlock();
    const std::lock_guard other(*held);
    lock.lock();
  }
  g_seen.lines.emplace_back(level, message);
  g_seen.threads.push_back(std::this_thread::get_id());
  return g_seen.take ? 1 : 0;
}

class LogSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_level(LogLevel::kInfo);
    const std::lock_guard lock(g_seen.mutex);
    g_seen.lines.clear();
    g_seen.threads.clear();
    g_seen.take = true;
    g_seen.gate_open = true;
    g_seen.entered = false;
    g_seen.held = nullptr;
  }
  void TearDown() override {
    open_gate();
    set_log_sink(nullptr);
    set_log_level(LogLevel::kWarning);
  }
  static void open_gate() {
    const std::lock_guard lock(g_seen.mutex);
    g_seen.gate_open = true;
    g_seen.changed.notify_all();
  }
  static void wait_entered() {
    std::unique_lock lock(g_seen.mutex);
    g_seen.changed.wait(lock, [] { return g_seen.entered; });
  }
  static std::vector<std::pair<int, std::string>> seen_lines() {
    const std::lock_guard lock(g_seen.mutex);
    return g_seen.lines;
  }
};

TEST_F(LogSinkTest, WithoutASinkLinesGoToStderrWithTheirPrefix) {
  ::testing::internal::CaptureStderr();
  log(LogLevel::kWarning, "plain line");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "[torch_memory_saver WARNING] plain line\n");
}

TEST_F(LogSinkTest, TheSinkGetsEachLineInOrderWithItsLevelEscapedAndWithoutPrefix) {
  set_log_sink(record_line);
  ::testing::internal::CaptureStderr();
  log(LogLevel::kError, "first");
  log(LogLevel::kInfo, "second\nforged");
  log(LogLevel::kDebug, "below the level: never made");
  flush_log();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "");
  const auto lines = seen_lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], std::make_pair(0, std::string("first")));
  EXPECT_EQ(lines[1], std::make_pair(2, std::string("second\\nforged")));
  const std::lock_guard lock(g_seen.mutex);
  EXPECT_NE(g_seen.threads[0], std::this_thread::get_id()) << "the log thread calls the sink";
}

TEST_F(LogSinkTest, TheContextLeadsTheSinksMessage) {
  set_log_sink(record_line);
  set_log_context("rank 3");
  log(LogLevel::kWarning, "from a rank");
  flush_log();
  set_log_context("");
  const auto lines = seen_lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].second, "rank 3: from a rank");
}

TEST_F(LogSinkTest, LoggingUnderALockTheSinkTakesDoesNotWaitForTheSink) {
  // As a pause logs under the engine's lock while the sink needs the GIL
  // that a thread waiting for that lock holds: log() must return first.
  std::mutex engine_lock;
  set_log_sink(record_line);
  {
    const std::lock_guard lock(g_seen.mutex);
    g_seen.held = &engine_lock;
  }
  {
    const std::lock_guard held(engine_lock);
    log(LogLevel::kWarning, "logged under the lock");
    EXPECT_TRUE(seen_lines().empty());
  }
  flush_log();
  EXPECT_EQ(seen_lines().size(), 1u);
}

TEST_F(LogSinkTest, ALineTheSinkDoesNotTakeGoesToStderr) {
  set_log_sink(record_line);
  {
    const std::lock_guard lock(g_seen.mutex);
    g_seen.take = false;
  }
  ::testing::internal::CaptureStderr();
  log(LogLevel::kWarning, "declined");
  flush_log();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "[torch_memory_saver WARNING] declined\n");
}

TEST_F(LogSinkTest, UnsettingWaitsForTheCallInProgressThenLinesGoToStderr) {
  set_log_sink(record_line);
  {
    const std::lock_guard lock(g_seen.mutex);
    g_seen.gate_open = false;
  }
  log(LogLevel::kWarning, "in progress");
  wait_entered();
  std::atomic<bool> unset{false};
  std::thread unsetting([&] {
    set_log_sink(nullptr);
    unset.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(unset.load()) << "returned while the sink was still running";
  open_gate();
  unsetting.join();
  EXPECT_EQ(seen_lines().size(), 1u);
  ::testing::internal::CaptureStderr();
  log(LogLevel::kWarning, "after");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "[torch_memory_saver WARNING] after\n");
  EXPECT_EQ(seen_lines().size(), 1u);
}

TEST_F(LogSinkTest, LinesBeyondTheQueueAreDroppedAndCounted) {
  set_log_sink(record_line);
  {
    const std::lock_guard lock(g_seen.mutex);
    g_seen.gate_open = false;
  }
  log(LogLevel::kWarning, "held");
  wait_entered();  // taken off the queue: the queue is empty now
  for (std::size_t i = 0; i < kMaxQueuedLogLines + 5; ++i) log(LogLevel::kInfo, "line");
  open_gate();
  flush_log();
  const auto lines = seen_lines();
  ASSERT_EQ(lines.size(), kMaxQueuedLogLines + 2);
  EXPECT_EQ(lines[1], std::make_pair(1, std::string("5 log lines were dropped: the log sink fell "
                                                    "behind")));
}

int flush_and_unset_inside(int /*level*/, const char* /*message*/) {
  flush_log();            // must not wait for itself
  set_log_sink(nullptr);  // nor for its own call
  const std::lock_guard lock(g_seen.mutex);
  g_seen.entered = true;
  g_seen.changed.notify_all();
  return 1;
}

TEST_F(LogSinkTest, ASinkMayFlushAndUnsetItself) {
  set_log_sink(flush_and_unset_inside);
  log(LogLevel::kWarning, "once");
  wait_entered();
  flush_log();
}

TEST_F(LogSinkTest, AForkedChildLogsToStderrWithoutTheParentsSink) {
  set_log_sink(record_line);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    log(LogLevel::kWarning, "from the child");
    flush_log();
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buffer[256];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) out.append(buffer, n);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(out, "[torch_memory_saver WARNING] from the child\n");
  flush_log();
  EXPECT_TRUE(seen_lines().empty());
}

}  // namespace
}  // namespace tms
