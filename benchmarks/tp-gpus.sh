#!/usr/bin/env bash
# Tensor parallelism (issue 10) on one host of several GPUs, in one device call: each JOB in
# turn, into one store, with vLLM's NVLink multicast guarded.
#   OUT=DIR [BUDGET=560] bash benchmarks/tp-gpus.sh JOB [JOB ...]
# JOB: ENGINE:TP sweeps $SPEC (default: benchmarks/sweeps/tp-llama-3.1-8b.yaml) with
# -e ENGINE --tp TP (vLLM's need the bundle installed and on PYTHONPATH); replay:ENGINE:TP
# replays $REPLAY offline at --tp TP (default: a 16-request sample of azure-code-2023 on
# llama-3.1-8b, binned).
#   bash benchmarks/tp-gpus.sh vllm:1 vllm:2 vllm:4
#   bash benchmarks/tp-gpus.sh hf-eager:2 hf-eager:4 replay:hf-eager:2
# Each job runs in a session of its own, waited for by pid, with what is left of BUDGET
# seconds: then SIGINT (a sweep records the point it is in and stops), and 60 s later SIGKILL
# for the whole session (the sweep's worker and vLLM's processes too). A job with under 60 s
# left is not started.
# The guard (the hosts' rule: nothing may create NVLink multicast memory): every 2 s the
# running job's log is read, and the job's session is killed at once where it names vLLM's
# all-reduce + RMS-norm fusion (`Enabled custom fusions: ... allreduce_rms`), FlashInfer's
# `mnnvl` all-reduce backend or `cuMulticast`; no later job runs then. infergy turns them off
# where the host has multicast off (docs/measurements.md): the guard is for when it did not.
# $OUT: tp.db (the store), tp.log (every job's output), gpus.csv (the cards).
set -u
[ $# -ge 1 ] && [ -n "${OUT:-}" ] || { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }
dir=/tmp/infergy-tp
spec=${SPEC:-benchmarks/sweeps/tp-llama-3.1-8b.yaml}
multicast='Enabled custom fusions:.*allreduce_rms|allreduce backend: mnnvl|cuMulticast'
mkdir -p "$dir"
end=$(( $(date +%s) + ${BUDGET:-560} ))

run_job() {  # JOB: its infergy command, in a session of its own; sets $status
  local engine tp what=$1 log=$dir/job.log
  IFS=: read -r engine tp <<<"$what"
  if [ "$engine" = replay ]; then
    IFS=: read -r _ engine tp <<<"$what"
    # shellcheck disable=SC2086  # REPLAY: several options
    set -- replay --mode offline -e "$engine" --tp "$tp" --batching binned \
      ${REPLAY:--t azure-code-2023 --sample 16 -m llama-3.1-8b} --db "$dir/tp.db"
  else
    set -- sweep "$spec" -e "$engine" --tp "$tp" --db "$dir/tp.db"
  fi
  local left=$(( end - $(date +%s) ))
  if [ "$left" -lt 60 ]; then
    echo "== $what: not started, ${left} s of the budget left"; status=skipped; return
  fi
  echo "== $what $(date -u +%FT%TZ): infergy $* (${left} s left)"
  : >"$log"
  PYTHONUNBUFFERED=1 PYTHONPATH="src:${PYTHONPATH:-}" COLUMNS=160 \
    setsid python3 -m infergy "$@" >"$log" 2>&1 </dev/null &
  local pid=$! stopping=0  # setsid, not a group leader here, runs in place: pid = session
  status=done
  while kill -0 "$pid" 2>/dev/null; do
    if grep -qE "$multicast" "$log"; then
      pkill -KILL -s "$pid"; status=multicast; break
    fi
    now=$(date +%s)
    if [ "$stopping" = 0 ] && [ "$now" -ge "$end" ]; then
      kill -INT "$pid"; stopping=$now; status=budget
    elif [ "$stopping" != 0 ] && [ "$now" -ge $((stopping + 60)) ]; then
      pkill -KILL -s "$pid"; break
    fi
    sleep 2
  done
  wait "$pid" 2>/dev/null
  local rc=$?
  pkill -KILL -s "$pid" 2>/dev/null  # anything the job left behind
  cat "$log"
  echo "== $what $(date -u +%FT%TZ): exit $rc ($status)"
}

for job in "$@"; do
  run_job "$job" >>"$dir/tp.log" 2>&1
  tail -n 3 "$dir/tp.log"
  if [ "$status" = multicast ]; then
    echo "tp-gpus: $job named NVLink multicast in its log: stopped, no later job run" |
      tee -a "$dir/tp.log" >&2
    break
  fi
done
[ -f "$dir/tp.db" ] && python3 -c 'import sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$dir/tp.db" "$OUT/tp.db"
cp "$dir/tp.log" "$OUT/tp.log"
nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,temperature.gpu,power.draw \
  --format=csv >"$OUT/gpus.csv" || rm -f "$OUT/gpus.csv"
