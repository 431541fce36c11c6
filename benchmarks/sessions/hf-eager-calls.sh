#!/usr/bin/env bash
# hf-eager's runs, in calls that stand alone: no vLLM bundle to send, no session to outlive its
# call. Each call resumes the store it carries, measures for at most SECONDS, stops after the
# point in flight (or 90 s later, that point abandoned: a length sweep's output of 4,096 takes
# about 5 minutes with its warm-up and repeats), and brings the store back under $OUT. Its
# points are kept if the next call never comes: a machine goes back 30 s after a call, and one
# was lost on 2026-12-06 between two calls of a background session.
#   bash benchmarks/sessions/hf-eager-calls.sh [CARRIED-STORE] [SECONDS]   # defaults: none, 480
# The store lives in /tmp/infergy-hf.db while the machine stays warm, so the next call, made at
# once, needs to carry nothing: `bash benchmarks/sessions/hf-eager-calls.sh "" 480` again. On a
# fresh machine (the last one lost), copy the store that came back to .stage/hf.db and carry it:
#   bash benchmarks/sessions/hf-eager-calls.sh .stage/hf.db 480
# What the calls run, by card (each predicted before it runs, the prediction committed):
# - an H200: issue 32's hf-eager calibrations of llama-3.2-1b and llama-3.2-3b (three models
#   on hf-eager there, with llama-3.1-8b's design shipped; predicted in
#   docs/measurements/2026-12-06-h200-calibrations-predicted/). Run them in the first calls of
#   an H200 session, beside the vLLM bundle's parts (next.sh).
# - an H100: issue 30's study experiments on hf-eager, llama-3.1-8b: temperature and top-p
#   sampling against greedy at B = 1 and B = max (32 points, about 11 minutes; 30 done on
#   2026-12-06, docs/measurements/2026-12-06-h100-night/), the batch sweep 1 to 1,024 at 512 /
#   128 (about 4 minutes; past 256 out of memory, as the profile's B = max says), the study's
#   length sweeps (46 points at B = 1, about 20 minutes: its outputs of 1,024 to 4,096 take
#   most), then hf-compiled's batch sweep (it compiles each batch's shapes: about 12 minutes).
#   Predicted in docs/measurements/2026-12-06-study-experiments-predicted/. The study measured
#   on A6000s and A100s: an H100 answers these as well as an H200. Every hf-eager calibration
#   issue 32 asked of the H100 is done (docs/measurements.md, 2026-12-06).
# Each run resumes by model: a run done measures nothing. What the calls bring back: the store
# (hf-eager.db), calls.log and card.txt.
set -u
carried=${1:-}
seconds=${2:-480}
: "${OUT:?OUT must name the folder the store comes back in}"
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)" in
  *H200*) runs=("calibrate -m llama-3.2-1b -e hf-eager" "calibrate -m llama-3.2-3b -e hf-eager")
          base= ;;  # nothing measured on an H200 yet
  *) runs=("sweep benchmarks/sweeps/h200-decoding-llama-3.1-8b.yaml -e hf-eager --resume-by model"
           "sweep batch-sweep -m llama-3.1-8b -e hf-eager --resume-by model"
           "sweep length-sweep -m llama-3.1-8b -e hf-eager --resume-by model"
           "sweep batch-sweep -m llama-3.1-8b -e hf-compiled --resume-by model")
     base=docs/measurements/2026-12-06-h100-night/decodings-hf-eager-h100.db ;;  # 30 done
esac
db=/tmp/infergy-hf.db
src=${carried:-$base}
if [ ! -f "$db" ] && [ -n "$src" ]; then  # a fresh machine: the carried store, or the committed
  cp "$src" "$db" && chmod u+w "$db" || exit  # a store fetched back is read-only
fi
nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader > "$OUT/card.txt"
end=$(( $(date +%s) + seconds ))
for run in "${runs[@]}"; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  echo "== $(date -u +%T) $run: at most $left s" >> "$OUT/calls.log"
  # shellcheck disable=SC2086  # a run is words
  PYTHONPATH=src timeout -s INT -k 90 "$left" python3 -m infergy $run --db "$db" 2>&1 |
    grep -v -i "warn" >> "$OUT/calls.log"
done
# The store whole in one file (SQLite's WAL folded in), whatever ended the last command.
python3 -c "import sqlite3, sys
sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$db"
cp "$db" "$OUT/hf-eager.db"
grep "^== \|points measured\|measured" "$OUT/calls.log" | tail -n 20
