/* Calls into the library while threads exit, as CUDA runtimes do: a
 * pthread-key destructor frees memory through cudaFree and tms_free after
 * the thread's C++ thread_local objects are gone (glibc runs those first).
 * Before each exit the thread leaves long strings in the library's
 * per-thread state (a long tag, a long error message), so that a call
 * touching destroyed state is a use-after-free that AddressSanitizer and
 * valgrind report. Exit status 0 = pass. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "torch_memory_saver/tms.h"

int cudaMalloc(void** ptr, size_t size); /* the library's interposers */
int cudaFree(void* ptr);

enum { kThreads = 16 };

typedef struct {
  void* by_cuda_free;
  void* by_tms_free;
  int cuda_free_status;
  int tms_free_status;
  int foreign_free_status;
  bool message_readable;
  bool done;
} Teardown;

static pthread_key_t g_key;
static Teardown g_teardown[kThreads];

static void on_thread_exit(void* value) {
  Teardown* teardown = (Teardown*)value;
  teardown->cuda_free_status = cudaFree(teardown->by_cuda_free);
  teardown->tms_free_status = tms_free(teardown->by_tms_free);
  int local = 0;
  teardown->foreign_free_status = tms_free(&local); /* fails: writes an error message */
  teardown->message_readable = strstr(tms_last_error(), "did not allocate") != NULL;
  (void)tms_get_current_tag();
  teardown->done = true;
}

static void* thread_main(void* arg) {
  Teardown* teardown = (Teardown*)arg;
  tms_set_interesting_region(true);
  tms_set_current_tag("a tag long enough to live on the heap, not inside the string");
  if (cudaMalloc(&teardown->by_cuda_free, 1 << 20) != 0) return NULL;
  if (tms_malloc(&teardown->by_tms_free, 1 << 20, 0) != TMS_OK) return NULL;
  int local = 0;
  tms_free(&local); /* a long error message, on the heap */
  pthread_setspecific(g_key, teardown);
  return NULL;
}

int main(void) {
  if (tms_init() != TMS_OK) {
    fprintf(stderr, "thread_exit_probe: tms_init: %s\n", tms_last_error());
    return 1;
  }
  pthread_key_create(&g_key, on_thread_exit);
  for (int i = 0; i < kThreads; ++i) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, thread_main, &g_teardown[i]) != 0) return 1;
    pthread_join(thread, NULL);
  }
  for (int i = 0; i < kThreads; ++i) {
    const Teardown* t = &g_teardown[i];
    if (!t->done || t->cuda_free_status != 0 || t->tms_free_status != TMS_OK ||
        t->foreign_free_status != TMS_ERROR_INVALID_ARGUMENT || !t->message_readable ||
        tms_owns(t->by_cuda_free) || tms_owns(t->by_tms_free)) {
      fprintf(stderr,
              "thread_exit_probe: thread %d: done %d, cudaFree %d, tms_free %d, foreign %d, "
              "message %d\n",
              i, t->done, t->cuda_free_status, t->tms_free_status, t->foreign_free_status,
              t->message_readable);
      return 1;
    }
  }
  puts("thread_exit_probe: ok");
  return 0;
}
