#include "capi/runtime.h"

#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>

#include "common/errors.h"
#include "common/log.h"
#include "driver/cuda_driver.h"
#include "driver/fault_injecting_driver.h"
#include "driver/sim_driver.h"

namespace tms {
namespace {

std::mutex g_mutex;                        // serializes creating the runtime, nothing else
std::atomic<Runtime*> g_runtime{nullptr};  // intentionally leaked, see runtime.h
std::atomic<int> g_creating{0};            // threads inside runtime creation
std::atomic<bool> g_forked_child{false};
std::atomic<bool> g_exiting{false};

// The child of fork() has one thread. Whatever the parent's other threads
// were doing in the library (a pause, a log line, creating the runtime) is
// frozen there with its locks held, and the parent's GPU context is not the
// child's. So if the library was in use, every call in the child is
// refused, decided from atomics alone before any lock is taken.
void on_fork_child() {
  if (g_runtime.load() != nullptr || g_creating.load() > 0) g_forked_child.store(true);
}

// Registered when the library is loaded, before any thread can be inside it.
const bool g_fork_handler_registered = pthread_atfork(nullptr, nullptr, on_fork_child) == 0;

/// Counts the calling thread as creating the runtime for its lifetime.
class CreatingRuntime {
 public:
  CreatingRuntime() { g_creating.fetch_add(1); }
  CreatingRuntime(const CreatingRuntime&) = delete;
  CreatingRuntime& operator=(const CreatingRuntime&) = delete;
  ~CreatingRuntime() { g_creating.fetch_sub(1); }
};

void remove_disk_backups_at_exit() {
  // From here on calls are refused, so no thread writes a new backup file
  // after the ones below are gone.
  g_exiting.store(true);
  // A forked child shares the parent's file names but not its backups.
  if (g_forked_child.load()) return;
  if (Runtime* rt = runtime_if_created()) {
    rt->engine->remove_disk_backups();
    // No host memory release may still be running while the driver shuts
    // down; restored backup files still waiting to be closed are closed too.
    try {
      rt->engine->drain_host_releases();
    } catch (...) {
    }
  }
}

// The environment is read once; a bad value is reported on every use.
struct ParsedEnv {
  std::optional<EnvConfig> config;
  std::string error;
};

const ParsedEnv& parsed_env() {
  static const ParsedEnv parsed = [] {
    ParsedEnv result;
    try {
      result.config = parse_process_env_config();
      set_log_level(result.config->log_level);
      if (!result.config->log_context.empty()) set_log_context(result.config->log_context);
    } catch (const ConfigError& error) {
      result.config.reset();
      result.error = error.what();
    }
    return result;
  }();
  return parsed;
}

}  // namespace

const EnvConfig& env_config() {
  const ParsedEnv& parsed = parsed_env();
  if (!parsed.config) throw ConfigError(parsed.error);
  return *parsed.config;
}

ThreadRegion default_thread_region() {
  ThreadRegion initial;
  const ParsedEnv& parsed = parsed_env();
  if (parsed.config) {
    initial.interesting = parsed.config->init_enable;
    initial.policy = parsed.config->init_policy;
  }
  return initial;
}

HostMemoryKind default_host_memory() {
  const ParsedEnv& parsed = parsed_env();
  return parsed.config ? parsed.config->default_host_memory : HostMemoryKind::kPinned;
}

Runtime* runtime_if_created() noexcept { return g_runtime.load(std::memory_order_acquire); }

const char* const kForkedChildMessage =
    "torch_memory_saver was initialized before fork(); the child process cannot use the "
    "parent's GPU memory. Start workers with the 'spawn' method, or use the library only in "
    "the child";

bool in_forked_child() noexcept { return g_forked_child.load(); }

Runtime& runtime() {
  if (g_forked_child.load()) throw InvalidState(kForkedChildMessage);
  if (g_exiting.load()) {
    throw InvalidState("the process is exiting; torch_memory_saver no longer takes calls");
  }
  if (Runtime* created = g_runtime.load(std::memory_order_acquire)) return *created;
  const CreatingRuntime creating;  // before the lock: a fork from now on refuses the child
  std::lock_guard lock(g_mutex);
  if (Runtime* created = g_runtime.load()) return *created;
  if (!g_fork_handler_registered) {
    throw InvalidState("pthread_atfork failed; torch_memory_saver cannot guard fork() children");
  }

  auto created = std::make_unique<Runtime>();
  created->config = env_config();
  std::unique_ptr<Driver> chosen;
  if (created->config.driver == DriverKind::kSim) {
    auto sim = std::make_unique<SimDriver>(created->config.sim);
    created->sim = sim.get();
    chosen = std::move(sim);
  } else {
    auto cuda = std::make_unique<CudaDriver>();
    cuda->load();  // a missing driver is an error now, not at the first allocation
    chosen = std::move(cuda);
  }
  auto faults = std::make_unique<FaultInjectingDriver>(*chosen);
  created->engine = new Engine(*faults, created->config.engine);
  created->engine->set_retain_cpu_backup(created->config.retain_cpu_backup);
  created->engine->set_default_disk_backup_dir(created->config.default_disk_backup_dir);
  if (created->config.disk_backup_dir) {
    try {
      created->engine->set_disk_backup_dir(*created->config.disk_backup_dir);
    } catch (const Error& error) {
      delete created->engine;
      throw ConfigError("environment variable TMS_DISK_BACKUP_DIR='" +
                        *created->config.disk_backup_dir + "' is not valid (" + error.what() +
                        "); accepted values: a directory this user can create or write, owned by "
                        "this user or root, not writable by other users unless sticky");
    }
  }
  // Never destroyed, like the engine (see runtime.h).
  static_cast<void>(chosen.release());
  created->faults = faults.release();
  created->driver = created->faults;
  // Backup files must not outlive the process; the engine itself is never
  // destroyed (see runtime.h), so remove them explicitly at exit.
  std::atexit(remove_disk_backups_at_exit);
  Runtime* ready = created.release();
  g_runtime.store(ready, std::memory_order_release);
  log(LogLevel::kInfo,
      std::string("engine ready on the ") + std::string(ready->driver->name()) + " driver");
  return *ready;
}

}  // namespace tms
