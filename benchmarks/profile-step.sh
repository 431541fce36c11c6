#!/usr/bin/env bash
# One step of the shipped profiles' sweep on a GPU machine (issue 7), for the device calls:
#   bash benchmarks/profile-step.sh ENGINE BATCH SECONDS
# Picks the card's store (src/infergy/profiles/llama-3.1-8b-<h100|h200>.db), keeps its working
# copy in /tmp/infergy.db while the machine stays warm, sweeps ENGINE at BATCH (1 or max) with
# --resume-by model, asks it to stop after SECONDS (it ends after the point in flight, or is
# killed KILL_AFTER s later, default 120), and copies the store and the log to $OUT.
# Exits with the sweep's status (0 also when it was stopped on time).
set -u
if [ $# -ne 3 ] || [ -z "${OUT:-}" ]; then
  echo "usage: OUT=DIR bash benchmarks/profile-step.sh ENGINE BATCH SECONDS" >&2; exit 2
fi
engine=$1 batch=$2 seconds=$3
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$name" in  # the exact cards of the shipped profiles: other variants differ in power
  "NVIDIA H200") card=h200 ;;
  "NVIDIA H100 80GB HBM3") card=h100 ;;
  *) echo "profile-step: '$name' is not the H100 SXM or H200 of the shipped profiles" >&2; exit 2 ;;
esac
store=src/infergy/profiles/llama-3.1-8b-$card.db
[ -f /tmp/infergy.db ] || { [ -f "$store" ] && cp "$store" /tmp/infergy.db; }
log="$OUT/sweep-$card-$engine-b$batch-$(date -u +%H%M).log"
PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:src" timeout -s INT -k "${KILL_AFTER:-120}" "$seconds" \
  python3 -m infergy sweep benchmarks/sweeps/profile-llama-3.1-8b.yaml --db /tmp/infergy.db \
  --resume-by model -e "$engine" -b "$batch" >"$log" 2>&1
rc=$?
# A sweep killed outright leaves its last points in SQLite's write-ahead log: fold it in.
python3 -c "import sqlite3; sqlite3.connect('/tmp/infergy.db').execute('PRAGMA wal_checkpoint(TRUNCATE)')"
cp /tmp/infergy.db "$OUT/llama-3.1-8b-$card.db"
nvidia-smi --query-gpu=name,driver_version,power.limit,uuid --format=csv >"$OUT/gpu-$card.txt"
tail -3 "$log"
[ "$rc" -eq 124 ] && rc=0  # stopped by the time limit, as asked
exit "$rc"
