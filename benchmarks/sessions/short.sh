#!/usr/bin/env bash
# A session too short for the vLLM bundle (under about 12 device-minutes): one call, one
# calibration that needs no vLLM, stopped after SECONDS and snapshotted under $OUT (each point
# is stored as it is measured; `calibrate` resumes by model, so the next session goes on):
#   an H200: hf-compiled for llama-3.1-8b (issue 30 item 1; predicted in
#            docs/measurements/2026-12-06-h200-engines-predicted/hf-compiled.json);
#   an H100: hf-eager for llama-3.2-1b (issue 32's three hf-eager calibrations; predicted in
#            docs/measurements/2026-12-06-h200-engines-predicted/llama-3.2-1b-hf-eager-h100.json).
#   OUT=DIR bash benchmarks/sessions/short.sh SECONDS
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
seconds=${1:?usage: short.sh SECONDS}
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "session: $card"
case "$card" in
  *H200*) bash $P base engines-h200 src/infergy/profile/shipped/llama-3.1-8b-h200.db &&
          bash $P start cc -- calibrate -m llama-3.1-8b -e hf-compiled --db $D/engines-h200.db ;;
  *H100*) bash $P base calibrate-h100 \
            docs/measurements/2026-12-05-h100-moe-olmo-calibrations/calibrate-h100.db &&
          bash $P start hf1 -- calibrate -m llama-3.2-1b -e hf-eager --db $D/calibrate-h100.db ;;
  *) echo "session: no plan for $card" >&2; exit 2 ;;
esac
NO_SNAPSHOT=1 bash $P wait "$seconds"
KILL_AFTER=20 bash $P stop
