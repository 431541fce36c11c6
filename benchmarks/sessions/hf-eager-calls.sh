#!/usr/bin/env bash
# Issue 32's hf-eager calibrations, in calls that stand alone: no vLLM bundle to send, no
# session to outlive its call. Each call resumes the store it carries, measures for at most
# SECONDS, stops after the point in flight (a call's 600 s leave 120 s for it: an hf-eager
# point at B = max takes up to about 90 s), and brings the store back under $OUT. Its points
# are kept if the next call never comes: a machine goes back 30 s after a call, and one was
# lost on 2026-12-06 between two calls of a background session.
#   bash benchmarks/sessions/hf-eager-calls.sh [CARRIED-STORE] [SECONDS]   # defaults: none, 480
# The store lives in /tmp/infergy-hf.db while the machine stays warm, so the next call, made at
# once, needs to carry nothing: `bash benchmarks/sessions/hf-eager-calls.sh "" 480` again. On a
# fresh machine (the last one lost), copy the store that came back to .stage/hf.db and carry it:
#   bash benchmarks/sessions/hf-eager-calls.sh .stage/hf.db 480
# On an H200 the calls calibrate llama-3.2-1b and llama-3.2-3b (issue 32 asks for three models on
# hf-eager there; llama-3.1-8b's design is shipped), from an empty store, each predicted before
# (docs/measurements/2026-12-06-h200-calibrations-predicted/). Run them in the first calls of an
# H200 session, beside the vLLM bundle's parts (next.sh).
# Done on H100s on 2026-12-06: llama-3.2-1b's 24 points and llama-3.2-3b's 24, olmo-7b's 12,
# deepseek-r1-distill-qwen-1.5b's 24 (its last 12 in the evening, against the predictions
# committed before: docs/measurements/2026-12-06-h100-evening/ and docs/measurements.md,
# 2026-12-06 evening). All of them are shipped; run again, the calls measure nothing. Add a
# model to the loop below to calibrate another (commit its prediction first, as deepseek-1.5b's
# was). What its calls bring back: the store (calibrate-hf.db), calls.log and card.txt.
set -u
carried=${1:-}
seconds=${2:-480}
: "${OUT:?OUT must name the folder the store comes back in}"
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)" in
  *H200*) models="llama-3.2-1b llama-3.2-3b" base= ;;  # issue 32's, with llama-3.1-8b's shipped
  *) models="olmo-7b deepseek-r1-distill-qwen-1.5b"
     base=docs/measurements/2026-12-06-h100-evening/calibrate-hf-h100.db ;;
esac
db=/tmp/infergy-hf.db
src=${carried:-$base}
if [ ! -f "$db" ] && [ -n "$src" ]; then  # a fresh machine: the carried store, or the committed
  cp "$src" "$db" && chmod u+w "$db" || exit  # a store fetched back is read-only
fi
nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader > "$OUT/card.txt"
end=$(( $(date +%s) + seconds ))
for m in $models; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  echo "== $(date -u +%T) $m: at most $left s" >> "$OUT/calls.log"
  PYTHONPATH=src timeout -s INT "$left" python3 -m infergy calibrate -m "$m" -e hf-eager \
    --db "$db" 2>&1 | grep -v -i "warn" >> "$OUT/calls.log"
done
# The store whole in one file (SQLite's WAL folded in), whatever ended the last command.
python3 -c "import sqlite3, sys
sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$db"
cp "$db" "$OUT/calibrate-hf.db"
grep "^== \|points measured" "$OUT/calls.log"
