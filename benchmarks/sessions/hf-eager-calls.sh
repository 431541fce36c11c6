#!/usr/bin/env bash
# Issue 32's three hf-eager calibrations, in calls that stand alone: no vLLM bundle to send, no
# session to outlive its call. Each call resumes the store it carries, measures for at most
# SECONDS, stops after the point in flight, and brings the store back under $OUT. Its points
# are kept if the next call never comes: a machine goes back 30 s after a call, and one was
# lost on 2026-12-06 between two calls of a background session.
#   bash benchmarks/sessions/hf-eager-calls.sh [CARRIED-STORE] [SECONDS]   # defaults: none, 500
# e.g. the first call `bash benchmarks/sessions/hf-eager-calls.sh "" 500`; copy the store that
# comes back to .stage/hf.db, then the next call carries .stage/hf.db:
#   bash benchmarks/sessions/hf-eager-calls.sh .stage/hf.db 500
# Done on the H100 on 2026-12-06: llama-3.2-1b's first 18 points
# (docs/measurements/2026-12-06-h100-morning/, the base when nothing is carried). What its
# calls bring back: the store, each model's design (YAML), calls.log and card.txt.
set -u
carried=${1:-}
seconds=${2:-500}
: "${OUT:?OUT must name the folder the store comes back in}"
base=docs/measurements/2026-12-06-h100-morning/calibrate-hf-h100.db
db=$OUT/calibrate-hf.db
cp "${carried:-$base}" "$db" && chmod u+w "$db" || exit  # a store fetched back is read-only
nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader > "$OUT/card.txt"
end=$(( $(date +%s) + seconds ))
for m in llama-3.2-1b llama-3.2-3b olmo-7b; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  echo "== $(date -u +%T) $m: at most $left s" >> "$OUT/calls.log"
  PYTHONPATH=src timeout -s INT "$left" python3 -m infergy calibrate -m "$m" -e hf-eager \
    --db "$db" 2>&1 | grep -v -i "warn" >> "$OUT/calls.log"
done
grep "^== \|points measured" "$OUT/calls.log"
