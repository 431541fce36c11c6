#!/usr/bin/env bash
# The shipped profiles' sweep (issue 7) on every GPU of one host at once, over several device
# calls. Each GPU's worker runs in its own session (setsid), so it outlives the call that
# started it while the machine stays warm; each call after the first waits and brings back a
# snapshot.
#   OUT=DIR bash benchmarks/profile-gpus.sh start JOBS_GPU0 [JOBS_GPU1 ...]  # - : none
#   OUT=DIR bash benchmarks/profile-gpus.sh wait SECONDS    # or until every worker has ended
#   OUT=DIR bash benchmarks/profile-gpus.sh stop [GPU ...]  # after the points in flight
#   OUT=DIR bash benchmarks/profile-gpus.sh run SECONDS JOBS_GPU0 [...]  # all three, one call
# A machine goes back 30 s after a call, with whatever runs on it: where the next call may
# come later than that, `run` (start, wait, stop inside one call) loses nothing.
# JOBS: comma-separated, run one after the other on that GPU: ENGINE:BATCH[:K/N] sweeps
# benchmarks/sweeps/profile-llama-3.1-8b.yaml at that batch (1 or max), --resume-by model,
# --shard K/N if given; "spot" measures benchmarks/sweeps/spot-check-llama-3.1-8b.yaml; a path
# to any other spec (…/NAME.yaml, or …/NAME.yaml:ENGINE for its points of that engine) sweeps
# it into its own store, brought back as NAME-<card>.db.
# Replays (issue 9) of $REPLAY (default: a 512-request sample of azure-code-2023 on
# llama-3.1-8b) into one store, brought back as replay-<card>.db, servers' logs in servers.log:
# "replay:ENGINE:BATCHINGS[:B]" offline (BATCHINGS binned, natural or binned+natural; B for
# --batch), "online:SERVER:RATE[:N]" online through --serve SERVER (vllm, vllm-eager,
# hf-paged) at a Poisson RATE a second (N for --steady-inflight); $WARMUP, the offline
# replays' --warmup (online ones refuse it).
# A shard K/N is every N-th point of the whole plan from the K-th, whatever its GPU's copy of
# the store holds: shards stopped and started again measure each point once. A start with no
# worker running first gives every GPU's copy the points of the others (an earlier call's
# shards: a later call sharding the same points otherwise, N changed, skips them).
#   start spot,hf-compiled:max:0/2 spot,hf-compiled:max:1/2 spot,hf-compiled:max:... -
# A later call may start a worker on a GPU without one (vLLM's, once the bundle is installed
# and on PYTHONPATH), or stop some: `stop 2 3`, then `start - - vllm:max vllm-eager:max`. A vLLM
# job may also follow others in a list started before the install, with PYTHONPATH already
# naming /tmp/vllm-site: it waits until vLLM can be imported.
# B = 1 jobs and replays only with one job list: they are bound by the host's CPU, which other
# GPUs' work shares ("spot" holds two B = 1 points too: on a busy host they measure the host).
# Every GPU sweeps into its own copy of the card's store (src/infergy/profile/shipped/
# llama-3.1-8b-<h100|h200>.db); each command ends with a snapshot in $OUT: the copies merged
# into llama-3.1-8b-<card>.db, the spot checks into spot-check-<card>.db, all logs in
# sweeps.log, the cards in gpus.csv. Every GPU of the host must be the same card.
set -u
dir=/tmp/infergy-profile
spec=benchmarks/sweeps/profile-llama-3.1-8b.yaml
spot=benchmarks/sweeps/spot-check-llama-3.1-8b.yaml
usage() {
  sed -n '6,9p' "$0" | sed 's/^# *//' >&2; exit 2
}

sweep() {  # GPU JOB: one job of a worker, from the code copied at start
  local gpu=$1 engine batch shard
  IFS=: read -r engine batch shard <<<"$2"
  cd "$dir/code" || return 1
  if [ "$engine" = spot ]; then
    set -- "$spot" --db "$dir/spot$gpu.db"
  elif [ "$engine" = replay ] || [ "$engine" = online ]; then
    replay "$gpu" "$engine" "$batch" "$shard"; return
  elif [[ $engine == *.yaml ]]; then  # SPEC[:ENGINE]: that spec, or its points of one engine
    [[ $batch == vllm* ]] && { vllm_installed "$gpu" || return; }
    set -- "$engine" --db "$dir/$(basename "$engine" .yaml).gpu$gpu.db" ${batch:+-e "$batch"}
  else
    [[ $engine == vllm* ]] && { vllm_installed "$gpu" || return; }
    set -- "$spec" --db "$dir/gpu$gpu.db" --resume-by model -e "$engine" -b "$batch" \
      ${shard:+--shard "$shard"}
  fi
  infergy_on "$gpu" sweep "$@"
}

vllm_installed() {  # GPU: wait until vLLM can be imported (a job after others, started with
  # PYTHONPATH naming the bundle's folder before its last part came), or the GPU's stop
  local found='import importlib.util as u, sys; sys.exit(u.find_spec("vllm") is None)'
  python3 -c "$found" && return
  echo "== GPU $1 $(date -u +%FT%TZ): waiting for vLLM's install"
  until python3 -c "$found"; do
    [ -f "$dir/stop$1" ] && { echo "== GPU $1: stopped before vLLM came"; return 1; }
    sleep 10
  done
}

infergy_on() {  # GPU COMMAND ARGS...: an infergy command on that GPU, from the code copy, logged
  local gpu=$1; shift
  echo "== GPU $gpu $(date -u +%FT%TZ): infergy $*"
  CUDA_VISIBLE_DEVICES=$gpu PYTHONUNBUFFERED=1 PYTHONPATH="$dir/code/src:${PYTHONPATH:-}" \
    COLUMNS=160 python3 -m infergy "$@"
  local rc=$?
  echo "== GPU $gpu $(date -u +%FT%TZ): exit $rc"
}

replay() {  # GPU MODE ENGINE|SERVER BATCHINGS|RATE[:B]: one replay into the GPU's store
  local gpu=$1 mode=$2 what=$3 how=${4%%:*} b=
  [[ $4 == *:* ]] && b=${4#*:}
  if [ "$mode" = replay ]; then
    set -- --mode offline -e "$what" --batching "${how//+/,}" ${b:+--batch "$b"} \
      ${WARMUP:+--warmup "$WARMUP"}
  else
    set -- --mode online --serve "$what" --rate "$how" ${b:+--steady-inflight "$b"}
  fi
  # shellcheck disable=SC2086  # REPLAY: several options
  set -- ${REPLAY:--t azure-code-2023 --sample 512 -m llama-3.1-8b} "$@" --db "$dir/replay$gpu.db"
  TMPDIR=$dir infergy_on "$gpu" replay "$@"  # the servers' logs where the snapshot finds them
}

snapshot() {
  local card=$1
  python3 - "$dir" "$OUT" "$card" <<'EOF'
import glob, sqlite3, subprocess, sys
src, out, card = sys.argv[1:]


def merge(stores, into):
    subprocess.run([sys.executable, "-m", "infergy", "results", "merge", *stores, "-o", into],
                   check=True, cwd=f"{src}/code",
                   env={"PYTHONPATH": f"{src}/code/src", "PATH": "/usr/bin:/bin"})


for name, pattern in ((f"llama-3.1-8b-{card}.db", "gpu*.db"),
                      (f"spot-check-{card}.db", "spot[0-9]*.db"),  # not spot-check-*.gpuN.db
                      (f"replay-{card}.db", "replay*.db")):
    stores = sorted(glob.glob(f"{src}/{pattern}"))
    if stores:
        merge(stores, f"{out}/{name}")
for stem in sorted({s.rsplit("/", 1)[1].rsplit(".gpu", 1)[0] for s in glob.glob(f"{src}/*.gpu*.db")}):
    merge(sorted(glob.glob(f"{src}/{stem}.gpu*.db")), f"{out}/{stem}-{card}.db")
base = {r[0] for r in sqlite3.connect(f"{src}/base.db").execute("SELECT id FROM points")} \
    if glob.glob(f"{src}/base.db") else set()
if glob.glob(f"{out}/llama-3.1-8b-{card}.db"):  # what this host measured, every GPU's together
    rows = [r for r in sqlite3.connect(f"{out}/llama-3.1-8b-{card}.db").execute(
        "SELECT id, engine, batch_requested, status FROM points") if r[0] not in base]
    kinds = {}
    for _, engine, batch, status in rows:
        kinds[f"{engine} B={batch} {status}"] = kinds.get(f"{engine} B={batch} {status}", 0) + 1
    print(f"llama-3.1-8b-{card}.db: {len(rows)} new points", dict(sorted(kinds.items())))
EOF
  cat "$dir"/gpu*.log >"$OUT/sweeps.log" 2>/dev/null
  for log in "$dir"/infergy-server-*.log; do
    [ -f "$log" ] && { echo "== $log"; tail -n 200 "$log"; }
  done >"$OUT/servers.log"
  nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,temperature.gpu,power.draw \
    --format=csv >"$OUT/gpus.csv"
}

running() {  # [GPU]: is a worker running (on that GPU)?
  pgrep -f "profile-gpus.sh worker ${1:-}" >/dev/null
}

[ $# -ge 1 ] || usage
command=$1; shift
if [ "$command" = worker ]; then  # internal: GPU JOBS, started by `start`
  gpu=$1
  for job in ${2//,/ }; do
    [ -f "$dir/stop$gpu" ] && break
    sweep "$gpu" "$job" >>"$dir/gpu$gpu.log" 2>&1
  done
  exit 0
fi
[ -n "${OUT:-}" ] || usage
if [ "$command" = run ]; then  # SECONDS JOBS...: start, wait, stop; one snapshot at the end
  [ $# -ge 2 ] && [[ $1 =~ ^[0-9]+$ ]] || usage
  seconds=$1; shift
  NO_SNAPSHOT=1 bash "$0" start "$@" || exit
  NO_SNAPSHOT=1 bash "$0" wait "$seconds"
  exec bash "$0" stop
fi
names=$(nvidia-smi --query-gpu=name --format=csv,noheader | sort -u)
case "$names" in  # the exact cards of the shipped profiles: other variants differ in power
  "NVIDIA H200") card=h200 ;;
  "NVIDIA H100 80GB HBM3") card=h100 ;;
  *) echo "profile-gpus: GPUs '$names': not all the H100 SXM or H200 of the shipped profiles" >&2
     exit 2 ;;
esac
case "$command" in
  start)
    [ $# -ge 1 ] || usage
    count=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
    if [ $# -gt "$count" ]; then
      echo "profile-gpus: $# job lists for $count GPUs" >&2; exit 2
    fi
    lists=("$@") busy=0
    for ((gpu = 0; gpu < count; gpu++)); do
      jobs=${lists[gpu]:--}
      if [ "$jobs" != - ] && running "$gpu "; then
        echo "profile-gpus: GPU $gpu has a worker already (stop it first, or give -)" >&2; exit 2
      fi
      { [ "$jobs" != - ] || running "$gpu "; } && busy=$((busy + 1))
    done
    # B = 1 is bound by the launching CPU: beside other GPUs' work (torch.compile's compile
    # workers above all) it measured 5-30% more energy per token (docs/measurements.md).
    # Replays hold small batches too: hf-eager's, beside vLLM on the other GPU, took 2-4
    # times as long a step as alone.
    if [ "$busy" -gt 1 ] &&
      [[ " $* $(pgrep -af 'profile-gpus.sh worker') " =~ (:1[:,\ ]|\.yaml|replay:|online:) ]]
    then
      echo "profile-gpus: B = 1 jobs and replays run alone on their host (no other GPU busy)" >&2
      exit 2
    fi
    if [ ! -d "$dir/code" ] || [ "${REFRESH:-}" = 1 ]; then
      mkdir -p "$dir/code"
      # The workers run from a copy: the next calls replace the working tree under them.
      # REFRESH=1 copies this call's code again: for the jobs that start after it, and for
      # running ones where they import a module late or start a process (a sweep's worker).
      cp -r src benchmarks "$0" "$dir/code/"
    fi
    if ! running && [ "$(ls "$dir"/gpu*.db 2>/dev/null | wc -l)" -gt 1 ]; then
      # Shards of an earlier call measured into their own copies: each copy gets the others'
      # points, so a shard started now (of another N, say) skips what they measured.
      for db in "$dir"/gpu*.db; do
        others=()
        for other in "$dir"/gpu*.db; do [ "$other" = "$db" ] || others+=("$other"); done
        PYTHONPATH="$dir/code/src" python3 -m infergy results merge "${others[@]}" -o "$db" ||
          exit
      done
    fi
    if [ ! -f "$dir/base.db" ]; then
      store=src/infergy/profile/shipped/llama-3.1-8b-$card.db
      [ -f "$store" ] && cp "$store" "$dir/base.db"
    fi
    threads=$(( $(nproc) / count ))  # a GPU's share of the cores, as on a one-GPU machine
    gpu=0
    for jobs in "$@"; do
      if [ "$jobs" != - ]; then
        [ -f "$dir/gpu$gpu.db" ] || [ ! -f "$dir/base.db" ] || cp "$dir/base.db" "$dir/gpu$gpu.db"
        rm -f "$dir/stop$gpu"
        # vLLM jobs need the bundle on PYTHONPATH when they start: the worker inherits it.
        OMP_NUM_THREADS=$threads setsid nohup bash "$dir/code/profile-gpus.sh" worker "$gpu" \
          "$jobs" </dev/null >/dev/null 2>&1 &
        echo "GPU $gpu: $jobs"
      fi
      gpu=$((gpu + 1))
    done
    sleep 5
    ;;
  wait)
    [ $# -eq 1 ] || usage
    end=$(( $(date +%s) + $1 ))
    while running && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    running || echo "profile-gpus: every worker has ended"
    ;;
  stop)  # [GPU ...]: default every GPU
    gpus=${*:-$(seq 0 $(( $(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l) - 1 )))}
    for gpu in $gpus; do
      touch "$dir/stop$gpu"
      pkill -INT -f "infergy (sweep|replay) .*--db $dir/(.*\.)?(gpu|spot|replay)$gpu\.db"  # ends after its point ...
    done
    end=$(( $(date +%s) + ${KILL_AFTER:-60} ))
    for gpu in $gpus; do
      while running "$gpu " && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
      # ... or loses it: the worker's whole session, the sweep's measuring process (its own
      # process group) and an engine's (vLLM's core) with it, so the GPU is free again.
      for sid in $(pgrep -f "profile-gpus.sh worker $gpu "); do pkill -KILL -s "$sid"; done
    done
    sleep 2
    ;;
  *) usage ;;
esac
[ -n "${NO_SNAPSHOT:-}" ] && exit 0
snapshot "$card"
tail -n 4 "$dir"/gpu*.log
