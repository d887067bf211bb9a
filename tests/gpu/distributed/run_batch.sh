#!/usr/bin/env bash
# One GPU batch of the multi-GPU tests on a machine with 1, 2 or 4 GPUs (each under ~8 minutes):
#
#   bash tests/gpu/distributed/run_batch.sh 1    # colocated processes (both hook modes) + example on 1 GPU
#   bash tests/gpu/distributed/run_batch.sh 2    # NCCL tests at world size 2 + example on 2 GPUs
#   bash tests/gpu/distributed/run_batch.sh 4    # NCCL tests at world size 4 + example on 4 and on 2 GPUs
#
# Builds the engine into /tmp/tms-build, runs from this source tree (PYTHONPATH=python).
# Output: $OUT/batch.log (everything printed) and $OUT/logs.tar.gz (every child's log,
# the per-rank result JSON files, NCCL debug logs, the example's JSON summaries).
# Without $OUT they go to /tmp/tms-dist-out. NVLink multicast stays off in every process.
set -uo pipefail
cd "$(dirname "$0")/../../.."

gpus="${1:?usage: run_batch.sh 1|2|4}"
out="${OUT:-/tmp/tms-dist-out}"
mkdir -p "$out"
logs=/tmp/tms-dist-logs
rm -rf "$logs"
mkdir -p "$logs"

export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TMS_TEST_LOG_DIR="$logs"
exec > >(tee -a "$out/batch.log") 2>&1

start=$(date +%s)
# The whole batch ends by TMS_BATCH_SECONDS (default 540 s, under the device's 600 s per command),
# so that the log archive is always written; a step that would start too late is skipped.
deadline=$((start + ${TMS_BATCH_SECONDS:-540}))
source scripts/batch_steps.sh

step "machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
"nccl", torch.cuda.nccl.version(), "gpus", torch.cuda.device_count(), "transformers", transformers.__version__)'

step "build the engine"
build=/tmp/tms-build
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTMS_BUILD_TESTS=OFF -DTMS_WERROR=OFF >/dev/null \
  && timeout 240 cmake --build "$build" -j "$(nproc)" >/dev/null || { echo "BUILD FAILED"; exit 1; }
export TMS_LIBRARY_PATH="$build/libtorch_memory_saver.so" PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
ls -l "$TMS_LIBRARY_PATH"

case "$gpus" in
  1)
    step "colocated processes, both hook modes"
    run 300 python3 -m pytest -s -q -rA tests/gpu/distributed/test_colocated.py
    step "end-to-end example, 1 GPU, torch hook mode (~1.1 B params)"
    run 180 python3 examples/rl_loop_e2e.py --json "$logs/e2e-1gpu-torch.json"
    step "end-to-end example, 1 GPU, trainer offloaded too (--offload-trainer)"
    run 150 python3 examples/rl_loop_e2e.py --offload-trainer --steps 2 --json "$logs/e2e-1gpu-offload.json"
    step "end-to-end example, 1 GPU, preload hook mode (small model)"
    run 150 python3 examples/rl_loop_e2e.py --hook-mode preload --steps 2 --layers 4 --kv-cache-gib 2 \
      --json "$logs/e2e-1gpu-preload-small.json"
    ;;
  2 | 4)
    step "NCCL tests, world size $gpus (collectives both hook modes, graph registration, detection)"
    run 330 env TMS_DIST_WORLD_SIZES="$gpus" python3 -m pytest -s -q -rA tests/gpu/distributed/test_nccl.py
    step "end-to-end example, $gpus GPUs (DDP trainer), torch hook mode"
    run 180 python3 -m torch.distributed.run --standalone --nproc-per-node "$gpus" examples/rl_loop_e2e.py \
      --json "$logs/e2e-${gpus}gpu-torch.json"
    if [[ "$gpus" == 4 ]]; then  # the 2-GPU example on the first two cards of the same machine
      step "end-to-end example, 2 GPUs (CUDA_VISIBLE_DEVICES=0,1, DDP trainer), torch hook mode"
      run 180 env CUDA_VISIBLE_DEVICES=0,1 python3 -m torch.distributed.run --standalone --nproc-per-node 2 \
        examples/rl_loop_e2e.py --json "$logs/e2e-2gpu-torch.json"
    fi
    step "end-to-end example, $gpus GPUs, trainer offloaded too (--offload-trainer)"
    run 150 python3 -m torch.distributed.run --standalone --nproc-per-node "$gpus" examples/rl_loop_e2e.py \
      --offload-trainer --steps 2 --json "$logs/e2e-${gpus}gpu-offload.json"
    ;;
  *)
    echo "unknown GPU count $gpus (1, 2 or 4)"
    exit 2
    ;;
esac

step "done (status $status)"
tar czf "$out/logs.tar.gz" -C "$logs" . && ls -l "$out"
exit $status
