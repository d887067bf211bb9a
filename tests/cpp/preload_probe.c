/* Started with libtorch_memory_saver.so in LD_PRELOAD and TMS_DRIVER=sim.
 * Checks that cudaMalloc/cudaFree reach the engine inside a region and the
 * (stand-in) runtime outside it. With --trainer-wide, TMS_INIT_ENABLE=1 is
 * set and every thread starts inside a region. With --one-engine (preloaded
 * through a launcher-facing file name), also checks that exactly one engine
 * library is mapped and that cudaMalloc resolves into it. With --dlopen PATH
 * (not preloaded), checks that dlopen-ing PATH maps one engine and finds the
 * engine's functions through the handle. Exit status 0 = pass. */
#define _GNU_SOURCE
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

#define ENGINE_PREFIX "libtorch_memory_saver"

/* Number of distinct files named libtorch_memory_saver* mapped into the
 * process (what the Python package looks for to find the engine). */
static int engine_copies_mapped(void) {
  FILE* maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return -1;
  char line[4096], seen[8][4096];
  int count = 0;
  while (fgets(line, sizeof(line), maps) != NULL) {
    const char* path = strchr(line, '/');
    if (path == NULL) continue;
    const char* base = strrchr(path, '/') + 1;
    if (strncmp(base, ENGINE_PREFIX, strlen(ENGINE_PREFIX)) != 0) continue;
    int known = 0;
    for (int i = 0; i < count; ++i) known |= strcmp(seen[i], path) == 0;
    if (!known && count < 8) snprintf(seen[count++], sizeof(seen[0]), "%s", path);
  }
  fclose(maps);
  return count;
}

/* Whether `function` lies in the engine library. */
static bool in_engine(void* function) {
  Dl_info info;
  if (function == NULL || dladdr(function, &info) == 0 || info.dli_fname == NULL) return false;
  const char* base = strrchr(info.dli_fname, '/');
  return strncmp(base != NULL ? base + 1 : info.dli_fname, ENGINE_PREFIX, strlen(ENGINE_PREFIX)) ==
         0;
}

static int check_dlopen(const char* path) {
  CHECK(engine_copies_mapped() == 0);
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) fprintf(stderr, "preload_probe: dlopen: %s\n", dlerror());
  CHECK(handle != NULL);
  CHECK(engine_copies_mapped() == 1);
  CHECK(in_engine(dlsym(handle, "tms_torch_malloc")));
  CHECK(in_engine(dlsym(handle, "tms_torch_free")));
  CHECK(in_engine(dlsym(handle, "tms_pause")));
  owns_fn owns = (owns_fn)dlsym(handle, "tms_owns");
  CHECK(owns != NULL && !owns((void*)(uintptr_t)0x1000));
  puts("preload_probe: ok");
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 2 && strcmp(argv[1], "--dlopen") == 0) return check_dlopen(argv[2]);
  const bool trainer_wide = argc > 1 && strcmp(argv[1], "--trainer-wide") == 0;
  if (argc > 1 && strcmp(argv[1], "--one-engine") == 0) {
    CHECK(engine_copies_mapped() == 1);
    CHECK(in_engine(dlsym(RTLD_DEFAULT, "cudaMalloc")));
    CHECK(in_engine(dlsym(RTLD_DEFAULT, "cudaFree")));
  }
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
