#!/usr/bin/env bash
# One GPU batch for the backup pipelines, under the 600 s a device command may run:
#
#   bash bench/run_gpu_batch.sh                          # rates + breakdown + full benchmark with disk
#   TMS_BATCH_PARTS=rates,breakdown,bench,sweep bash bench/run_gpu_batch.sh   # also the tuning sweep
#   TMS_BATCH_PARTS=cycles bash bench/run_gpu_batch.sh   # the RL loop: floors + cycles, 8 GiB, 8 cycles
#   TMS_BATCH_PARTS=disk bash bench/run_gpu_batch.sh     # disk part with 8 and with 1 read in flight
#   TMS_BATCH_PARTS=disklayout bash bench/run_gpu_batch.sh   # disk read-back by file layout (a probe)
#
# Builds the engine into /tmp/tms-bench-build and runs from this source tree.
# Output under $OUT (default /tmp/tms-bench-out): batch.log, breakdown.json,
# (rates: tms_host_prep_rates' table in batch.log),
# bench/ (results.json, results.md, rate_vs_layout.png), cycles/ (the same
# with cycles.png) and sweep-*/ (one benchmark of the backup part per setting
# of the pipeline's tuning variables).
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-/tmp/tms-bench-out}"
parts="${TMS_BATCH_PARTS:-rates,breakdown,bench}"
mkdir -p "$out"
exec > >(tee -a "$out/batch.log") 2>&1
start=$(date +%s)
deadline=$((start + ${TMS_BATCH_SECONDS:-560}))
BATCH_MARGIN_S=10 BATCH_MIN_S=20 BATCH_KILL_AFTER_S=10
source scripts/batch_steps.sh
wants() { [[ ",$parts," == *",$1,"* ]]; }

step "machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
nproc
df -h /tmp | tail -1
cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || true

step "build the engine"
build=/tmp/tms-bench-build
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTMS_BUILD_TESTS=OFF -DTMS_WERROR=OFF >/dev/null \
  && timeout 240 cmake --build "$build" >/dev/null || { echo "BUILD FAILED"; exit 1; }
export TMS_LIBRARY_PATH="$build/libtorch_memory_saver.so" PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
disk_dir=/tmp/tms-bench-disk
mkdir -p "$disk_dir"

if wants rates; then
  step "host-side rates of a cold pause (fault-in, register, copies), 1 to 16 threads"
  run 120 "$build/tms_host_prep_rates" 8 16
fi
if wants breakdown; then
  step "pause/resume without backup: engine phases next to raw VMM variants"
  run 120 python3 bench/probes/pause_breakdown.py --total-gib 8 --out "$out/breakdown.json"
fi
if wants bench; then
  step "full benchmark, 8 GiB, with the disk part in $disk_dir"
  run 300 python3 bench/bench_pause_resume.py --total-gib 8 --parts floors,nobackup,backup,alloc,disk \
    --disk-dir "$disk_dir" --disk-gib 4 --out "$out/bench"
fi
if wants cycles; then
  step "cycles part, 8 GiB: pause -> 200 ms GPU work -> resume -> 200 ms, 8 cycles, both host kinds"
  run 300 python3 bench/bench_pause_resume.py --total-gib 8 --parts floors,cycles --out "$out/cycles"
fi
if wants disklayout; then
  step "disk read-back by file layout (fallocate or not, 1 or 4 writers), 4 GiB, 16 MiB transfers"
  run 200 "$build/tms_disk_layout_probe" "$disk_dir" 4 16 4 2
fi
if wants disk; then
  for depth in ${TMS_BATCH_READ_DEPTHS:-8 1}; do
    step "disk part, 4 GiB, 1 and 16 tensors, $depth read(s) in flight (engine phases in the worker logs)"
    run 150 env TMS_CONF=disk_backup_read_depth=$depth TMS_LOG_LEVEL=info python3 bench/bench_pause_resume.py \
      --parts disk --disk-dir "$disk_dir" --disk-gib 4 --no-plot --out "$out/disk-read$depth"
  done
fi
if wants sweep; then
  # name:TMS_CONF=key=value,key=value (the backup part only, pinned host memory; docs/configuration.md);
  # TMS_SWEEP overrides the list.
  # Earlier sweeps (docs/gpu-runs.md) tried prepare threads 4/16, register chunks of 256 MiB, copy
  # chunks of 16 and 256 MiB with 4 and 1 streams: none beat the defaults.
  for setting in ${TMS_SWEEP:-"default:" "smallreq16:TMS_CONF=host_small_request_mb=16" "threads12:TMS_CONF=host_prepare_threads=12"}; do
    name=${setting%%:*}
    vars=${setting#*:}
    step "sweep $name ($vars)"
    run 90 env $vars python3 bench/bench_pause_resume.py --total-gib 8 --parts backup --layouts 256,4096 \
      --host-kinds pinned --no-plot --out "$out/sweep-$name"
  done
fi

step "done (status $status)"
rm -rf "$disk_dir"
# The device returns a limited number of files: one archive for the per-worker logs.
(cd "$out" && logs=$(ls -d bench/logs cycles/logs sweep-*/logs disk-*/logs 2>/dev/null; true) && [[ -n "$logs" ]] \
  && tar czf worker-logs.tar.gz $logs && rm -rf $logs)
exit $status
