#!/usr/bin/env bash
# Long infergy commands on this repository's GPU machines, which answer a call for at most
# 10 minutes and stay warm 30 s after it. A command started here runs in the background, in a
# session of its own, from a copy of the code, so it outlives the call that started it; each
# later call waits for it and brings back a snapshot of its stores. Spreading a sweep over the
# host's GPUs is infergy's own (`infergy sweep --launcher local`, the default: a worker a GPU);
# this script only keeps commands running between calls.
#   OUT=DIR bash benchmarks/profile-gpus.sh start NAME -- ARGS...  # `infergy ARGS...`, as NAME
#   OUT=DIR bash benchmarks/profile-gpus.sh queue NAME -- ARGS...  # the same, once every
#                                            # command started before it has ended
#   OUT=DIR bash benchmarks/profile-gpus.sh wait SECONDS   # or until every command has ended
#   OUT=DIR bash benchmarks/profile-gpus.sh stop [NAME ...]  # after the points in flight
#   OUT=DIR bash benchmarks/profile-gpus.sh run SECONDS NAME -- ARGS...  # all three, one call
#   OUT=DIR bash benchmarks/profile-gpus.sh base NAME STORE  # NAME's store begins as STORE
#   OUT=DIR bash benchmarks/profile-gpus.sh serve NAME -- serve ARGS...  # `infergy serve`,
#        returning once it answers; neither `queue` nor `wait` waits for it: `stop NAME` ends it
# A command's stores live in /tmp/infergy-profile (give `--db /tmp/infergy-profile/X.db`);
# `base` copies a store there first (the shipped profile: `--resume-by model` then skips its
# points). Examples, a vLLM sweep started in the call that installs the bundle:
#   base h200 src/infergy/profile/shipped/llama-3.1-8b-h200.db
#   start vllm -- sweep benchmarks/sweeps/profile-llama-3.1-8b.yaml -e vllm -b max
#     --db /tmp/infergy-profile/h200.db --resume-by model
#   start code -- replay -t azure-code-2023 --sample 512 -m llama-3.1-8b --mode online
#     --serve vllm --rate 4 --db /tmp/infergy-profile/replay.db
# Points at B = 1 and replays are paced by the host's CPU: measure them with nothing else
# running (`--workers 1`, one command at a time).
# Snapshot ($OUT, after every call): each store merged into $OUT/NAME.db (read while written:
# SQLite's WAL), every command's log in commands.log, servers' logs in servers.log, the cards
# in gpus.csv. `stop` sends Ctrl-C (a sweep ends after its points in flight), then SIGTERM
# after KILL_AFTER seconds (default 60: the points in flight abandoned, the measuring
# processes and their engines killed), then SIGKILL to what is left of the session.
set -u
dir=/tmp/infergy-profile
usage() {
  sed -n '8,16p' "$0" | sed 's/^# *//' >&2; exit 2
}

running() {  # [NAME]: does a command run (that one; a server only by its NAME)?
  local pid
  for pid in "$dir"/${1:-*}.pid ${1:+"$dir/$1.server"}; do
    [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && return 0
  done
  return 1
}

snapshot() {
  local db
  [ -n "${NO_SNAPSHOT:-}" ] && return
  for db in "$dir"/*.db; do
    [ -f "$db" ] || continue
    PYTHONPATH="$dir/code/src" python3 -m infergy results merge "$db" \
      -o "$OUT/$(basename "$db")" >/dev/null 2>&1 || echo "profile-gpus: $db not copied" >&2
  done
  cat "$dir"/*.log >"$OUT/commands.log" 2>/dev/null
  for log in "$dir"/infergy-server-*.log; do
    [ -f "$log" ] && { echo "== $log"; tail -n 200 "$log"; }
  done >"$OUT/servers.log"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,uuid,driver_version,\
power.limit,temperature.gpu,power.draw --format=csv >"$OUT/gpus.csv"
  for log in "$dir"/*.log; do [ -f "$log" ] && { echo "== $log"; tail -n 3 "$log"; }; done
}

[ $# -ge 1 ] || usage
command=$1; shift
[ -n "${OUT:-}" ] || usage
mkdir -p "$dir"
case "$command" in
  base)
    [ $# -eq 2 ] || usage
    # Writable whatever the source's mode (a snapshot fetched back is read-only).
    [ -f "$dir/$1.db" ] || { cp "$2" "$dir/$1.db" && chmod u+w "$dir/$1.db"; } || exit
    exit 0 ;;
  run)
    [ $# -ge 3 ] && [[ $1 =~ ^[0-9]+$ ]] || usage
    seconds=$1; shift
    NO_SNAPSHOT=1 bash "$0" start "$@" || exit
    NO_SNAPSHOT=1 bash "$0" wait "$seconds"
    exec bash "$0" stop ;;
  serve)  # a server: its pid in NAME.server, out of `queue`'s and `wait`'s sight
    [ $# -ge 3 ] && [ "$2" = -- ] || usage
    name=$1
    NO_SNAPSHOT=1 bash "$0" start "$@" >/dev/null || exit
    mv "$dir/$name.pid" "$dir/$name.server"
    end=$(( $(date +%s) + ${SERVE_WAIT:-540} ))
    until grep -q "^serving .* at http" "$dir/$name.log" 2>/dev/null; do
      if ! running "$name" || [ "$(date +%s)" -ge "$end" ]; then
        echo "profile-gpus: $name is not serving; its log ends:" >&2
        tail -n 20 "$dir/$name.log" >&2; exit 1
      fi
      sleep 2
    done
    grep "^serving .* at http" "$dir/$name.log" ;;
  start|queue)
    [ $# -ge 3 ] && [ "$2" = -- ] || usage
    name=$1; shift 2
    after=""  # queue: the commands running now, which it waits for (one card, one at a time)
    if [ "$command" = queue ]; then
      for pid in "$dir"/*.pid; do
        [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && after="$after $(cat "$pid")"
      done
    fi
    running "$name" && { echo "profile-gpus: $name runs already (stop it first)" >&2; exit 2; }
    if [ ! -d "$dir/code" ] || [ "${REFRESH:-}" = 1 ]; then
      # The commands run from a copy: the next calls replace the working tree under them.
      mkdir -p "$dir/code" && cp -r src benchmarks "$dir/code/"
    fi
    # Servers' logs where the snapshot finds them; vLLM's bundle on PYTHONPATH if exported.
    (
      cd "$dir/code" || exit
      # A queued command's shell waits, then becomes infergy's process (exec: the same pid, so
      # `stop` reaches either); stopped while it waits, it ends without starting.
      TMPDIR=$dir PYTHONUNBUFFERED=1 COLUMNS=160 PYTHONPATH="$dir/code/src:${PYTHONPATH:-}" \
        setsid nohup bash -c 'trap "exit 130" INT TERM
          for p in $0; do while kill -0 "$p" 2>/dev/null; do sleep 2; done; done
          exec python3 -m infergy "$@"' "$after" "$@" </dev/null >>"$dir/$name.log" 2>&1 &
      echo $! >"$dir/$name.pid"  # infergy's own process: it leads its session
    )
    echo "$name: infergy $*${after:+ (after pids$after)}"
    sleep 5 ;;
  wait)
    [ $# -eq 1 ] || usage
    end=$(( $(date +%s) + $1 ))
    while running && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    running || echo "profile-gpus: every command has ended" ;;
  stop)  # [NAME ...]: default every command
    names=${*:-$(for p in "$dir"/*.pid "$dir"/*.server; do
      [ -f "$p" ] && basename "${p%.*}"; done)}
    pidof() { cat "$dir/$1.pid" 2>/dev/null || cat "$dir/$1.server"; }
    for signal in INT TERM; do
      for name in $names; do
        running "$name" && kill -"$signal" "$(pidof "$name")"
      done
      end=$(( $(date +%s) + ${KILL_AFTER:-60} ))
      for name in $names; do
        while running "$name" && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
      done
    done
    for name in $names; do  # the last resort: the whole session of what is left
      running "$name" && pkill -KILL -s "$(pidof "$name")"
      rm -f "$dir/$name.pid" "$dir/$name.server"
    done ;;
  *) usage ;;
esac
snapshot
