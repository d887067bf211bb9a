/* A stand-in for libcudart in the preload test: answers cudaMalloc with a
 * recognizable pointer so the test can tell "forwarded to the real runtime"
 * from "served by the engine". */
#include <stddef.h>
#include <stdint.h>

#define FAKE_POINTER ((void*)(uintptr_t)0xfeed0000)

int fake_cudart_frees = 0;

int cudaMalloc(void** ptr, size_t size) {
  (void)size;
  *ptr = FAKE_POINTER;
  return 0;
}

int cudaFree(void* ptr) {
  if (ptr != FAKE_POINTER) return 1; /* cudaErrorInvalidValue */
  ++fake_cudart_frees;
  return 0;
}
