/* Started with libtorch_memory_saver.so in LD_PRELOAD and TMS_DRIVER=sim.
 * Checks that cudaMalloc/cudaFree reach the engine inside a region and the
 * (stand-in) runtime outside it. With --trainer-wide, TMS_INIT_ENABLE=1 is
 * set and every thread starts inside a region. Exit status 0 = pass. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int cudaMalloc(void** ptr, size_t size);
int cudaFree(void* ptr);
extern int fake_cudart_frees;

#define FAKE_POINTER ((void*)(uintptr_t)0xfeed0000)
#define CHECK(condition)                                          \
  do {                                                            \
    if (!(condition)) {                                           \
      fprintf(stderr, "preload_probe: failed: %s\n", #condition); \
      return 1;                                                   \
    }                                                             \
  } while (0)

typedef int (*set_region_fn)(bool);
typedef bool (*owns_fn)(const void*);

int main(int argc, char** argv) {
  const bool trainer_wide = argc > 1 && strcmp(argv[1], "--trainer-wide") == 0;
  /* The preloaded library is found by name, as an integration would. */
  set_region_fn set_region = (set_region_fn)dlsym(RTLD_DEFAULT, "tms_set_interesting_region");
  owns_fn owns = (owns_fn)dlsym(RTLD_DEFAULT, "tms_owns");
  CHECK(set_region != NULL && owns != NULL);

  if (trainer_wide) {
    /* TMS_INIT_ENABLE=1: the thread starts inside a region, no call needed. */
    void* early = NULL;
    CHECK(cudaMalloc(&early, 1 << 20) == 0);
    CHECK(early != FAKE_POINTER && owns(early));
    CHECK(cudaFree(early) == 0);
    CHECK(set_region(false) == 0); /* what disable() does */
  }

  void* outside = NULL;
  CHECK(cudaMalloc(&outside, 1 << 20) == 0);
  CHECK(outside == FAKE_POINTER);
  CHECK(cudaFree(outside) == 0);
  CHECK(fake_cudart_frees == 1);

  CHECK(set_region(true) == 0);
  void* inside = NULL;
  CHECK(cudaMalloc(&inside, 3 << 20) == 0);
  CHECK(inside != NULL && inside != FAKE_POINTER);
  CHECK(owns(inside));
  memset(inside, 0xab, 3 << 20); /* simulated device memory is host-addressable */
  void* empty = FAKE_POINTER;
  CHECK(cudaMalloc(&empty, 0) == 0); /* as the runtime: success, and no memory */
  CHECK(empty == NULL);
  CHECK(cudaMalloc(NULL, 1 << 20) == 1); /* cudaErrorInvalidValue */
  CHECK(set_region(false) == 0);
  CHECK(cudaFree(inside) == 0); /* routed to the engine by ownership, not region */
  CHECK(!owns(inside));
  CHECK(fake_cudart_frees == 1);
  CHECK(cudaFree(NULL) == 1); /* NULL goes to the runtime (the stand-in rejects it) */
  puts("preload_probe: ok");
  return 0;
}
