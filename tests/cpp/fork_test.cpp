// fork() while other threads of the process are inside the library: pausing
// and resuming, freeing through the cudaFree interposer, writing log lines.
// The child must get a clear error from every call, and never hang on a
// lock one of those threads held at the fork (only the forking thread lives
// on in the child).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "torch_memory_saver/tms.h"

extern "C" int cudaFree(void* ptr);  // the library's interposer

namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr int kCudaErrorInitializationError = 3;

// What the child checks; its exit status says which check failed.
[[noreturn]] void run_child(void* parent_allocation) {
  if (cudaFree(parent_allocation) != kCudaErrorInitializationError) _exit(10);
  if (std::strstr(tms_last_error(), "fork") == nullptr) _exit(11);
  if (tms_pause(nullptr) != TMS_ERROR_INVALID_STATE) _exit(12);
  int local = 0;
  tms_torch_free(&local, 0, 0, nullptr);  // fails, and logs that it failed
  if (tms_last_status() != TMS_ERROR_INVALID_STATE) _exit(13);
  void* ptr = nullptr;
  if (tms_malloc(&ptr, kMiB, 0) != TMS_ERROR_INVALID_STATE) _exit(14);
  _exit(0);
}

// Waits up to `limit` for the child; kills it if it is still running.
// Returns its exit status, or -1 if it hung.
int wait_or_kill(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST(Fork, ChildrenForkedWhileThreadsUseTheLibraryGetErrorsNeverAHang) {
  ASSERT_EQ(tms_init(), TMS_OK) << tms_last_error();
  ASSERT_EQ(tms_set_current_tag("fork-parent"), TMS_OK);
  void* kept = nullptr;
  ASSERT_EQ(tms_malloc(&kept, kMiB, 0), TMS_OK) << tms_last_error();

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&stop, w] {
      const std::string tag = "fork-worker-" + std::to_string(w);
      tms_set_current_tag(tag.c_str());
      while (!stop.load()) {
        void* ptr = nullptr;
        if (tms_malloc(&ptr, kMiB, 0) != TMS_OK) continue;
        tms_pause(tag.c_str());
        tms_resume(tag.c_str());
        tms_free(ptr);
      }
    });
  }
  threads.emplace_back([&stop] {  // the interposer, with a pointer the engine does not own
    int local = 0;
    while (!stop.load()) cudaFree(&local);
  });
  threads.emplace_back([&stop] {  // a failing torch free writes a log line each time
    int local = 0;
    while (!stop.load()) tms_torch_free(&local, 0, 0, nullptr);
  });

  int forks = 0;
  int hangs = 0;
  std::string failures;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (; forks < 300 && std::chrono::steady_clock::now() < deadline; ++forks) {
    const pid_t pid = fork();
    if (pid == 0) run_child(kept);
    ASSERT_GT(pid, 0);
    const int status = wait_or_kill(pid, std::chrono::seconds(5));
    if (status == -1) {
      ++hangs;
    } else if (status != 0) {
      failures += " " + std::to_string(status);
    }
  }
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(hangs, 0) << "of " << forks << " children hung";
  EXPECT_EQ(failures, "") << "exit statuses of children whose checks failed";
  EXPECT_GE(forks, 50);
  EXPECT_EQ(tms_free(kept), TMS_OK) << "the parent goes on";
}

}  // namespace

int main(int argc, char** argv) {
  setenv("TMS_DRIVER", "sim", 1);
  // The log lines of the threads above would flood the test output.
  const int null_fd = open("/dev/null", O_WRONLY);
  if (null_fd >= 0) dup2(null_fd, STDERR_FILENO);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
