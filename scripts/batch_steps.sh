# Shared steps of the one-call GPU batches (tests/gpu/distributed/run_batch.sh,
# bench/run_gpu_batch.sh). Source it after setting:
#   start     the batch's start (date +%s)
#   deadline  when the batch must be over (the device allows 600 s per call)
# and optionally BATCH_MARGIN_S (kept free before the deadline, default 15),
# BATCH_MIN_S (shortest step worth starting, default 30), BATCH_KILL_AFTER_S
# (grace after a step's limit, default 15). `status` turns 1 when a step fails
# or is skipped.
status=0

step() { echo; echo "=== [+$(($(date +%s) - start)) s] $*"; }

run() {  # run LIMIT_SECONDS CMD...: record a failure but go on with the batch
  local limit=$1 left=$((deadline - $(date +%s) - ${BATCH_MARGIN_S:-15}))
  shift
  if ((left < ${BATCH_MIN_S:-30})); then
    echo "SKIPPED (batch time used up): $*"
    status=1
    return
  fi
  ((limit > left)) && limit=$left
  echo "\$ $*   (limit ${limit} s)"
  timeout --kill-after="${BATCH_KILL_AFTER_S:-15}" "$limit" "$@"
  local code=$?
  echo "--- exit $code"
  ((code == 0)) || status=1
}
