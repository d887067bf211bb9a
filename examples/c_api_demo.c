/* torch_memory_saver from plain C: allocate in a tag with CPU backup, pause,
 * resume, print statistics.
 *
 *   TMS_DRIVER=sim ./c_api_demo    # no GPU: host memory stands in
 *   ./c_api_demo                    # on a GPU machine
 *
 * On the simulated driver device memory is host-addressable, so the demo
 * writes and checks it directly; on a GPU it only reports addresses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "torch_memory_saver/tms.h"

static int check(int status, const char* what) {
  if (status != TMS_OK) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, tms_last_error(), tms_status_name(status));
  }
  return status;
}

int main(void) {
  if (check(tms_init(), "tms_init") != TMS_OK) return 1;
  const int simulated = strcmp(tms_driver_name(), "sim") == 0;
  printf("driver: %s\n", tms_driver_name());

  const size_t size = (size_t)64 << 20;
  void* weights = NULL;
  tms_set_current_tag("weights");
  tms_set_enable_cpu_backup(true);
  if (check(tms_malloc(&weights, size, -1), "tms_malloc") != TMS_OK) return 1;
  if (simulated) memset(weights, 0x42, size);

  uint64_t free_bytes = 0, total_bytes = 0;
  tms_device_memory(-1, &free_bytes, &total_bytes);
  printf("allocated %zu MiB at %p; device free: %llu MiB\n", size >> 20, weights,
         (unsigned long long)(free_bytes >> 20));

  if (check(tms_pause("weights"), "tms_pause") != TMS_OK) return 1;
  tms_device_memory(-1, &free_bytes, &total_bytes);
  printf("paused; device free: %llu MiB\n", (unsigned long long)(free_bytes >> 20));

  if (check(tms_resume("weights"), "tms_resume") != TMS_OK) return 1;
  tms_device_memory(-1, &free_bytes, &total_bytes);
  printf("resumed at %p; device free: %llu MiB\n", weights, (unsigned long long)(free_bytes >> 20));
  if (simulated) {
    const unsigned char* bytes = (const unsigned char*)weights;
    int same = 1;
    for (size_t i = 0; i < size; i += 4096) same &= bytes[i] == 0x42;
    printf("contents restored: %s\n", same ? "yes" : "NO");
    if (!same) return 1;
  }

  size_t needed = 0;
  tms_stats_json(NULL, 0, &needed);
  char* json = malloc(needed);
  if (json != NULL && check(tms_stats_json(json, needed, &needed), "tms_stats_json") == TMS_OK) {
    printf("stats: %s\n", json);
  }
  free(json);
  return check(tms_free(weights), "tms_free") == TMS_OK ? 0 : 1;
}
