#include "capi/thread_state.h"

#include <pthread.h>

#include <new>

namespace tms {
namespace {

// Trivially destructible on purpose: valid during the whole thread exit.
thread_local ThreadState* t_state = nullptr;

void free_thread_state(void* state) {
  delete static_cast<ThreadState*>(state);
  t_state = nullptr;
}

struct StateKey {
  pthread_key_t key{};
  bool ok = pthread_key_create(&key, free_thread_state) == 0;
};

const StateKey& state_key() {
  static const StateKey key;  // never deleted: threads may exit after static destruction
  return key;
}

}  // namespace

ThreadState* thread_state() noexcept {
  if (ThreadState* state = t_state) return state;
  ThreadState* state = nullptr;
  try {
    state = new ThreadState{default_thread_region(), TMS_OK, std::string()};
  } catch (...) {
    return nullptr;
  }
  const StateKey& key = state_key();
  // Without the key (no key slots left) the state leaks at thread exit
  // rather than be freed while still reachable.
  if (key.ok) pthread_setspecific(key.key, state);
  t_state = state;
  return state;
}

}  // namespace tms
