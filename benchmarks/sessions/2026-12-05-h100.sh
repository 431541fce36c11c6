#!/usr/bin/env bash
# The runs of a session that asked for an H200 and was lent an H100 (twice): what an H100 can
# advance of issues 30 and 32, back to back on one card:
#   1. issue 30 item 4: vLLM at batch 1 against the settings docs/notes/issue30-b1-options.md
#      found might shorten its decode step on Hopper (most likely first; at most 8 minutes,
#      each setting an engine start: the sweep keeps what it measured);
#   2. issue 32: `infergy calibrate` of llama-3.2-1b and llama-3.2-3b on vllm, so that the
#      H100 holds three calibrated models of one engine (llama-3.1-8b's is shipped), the
#      fewest a leave-one-model-out check needs (benchmarks/validate_transfer.py).
# From the repository root, the vLLM bundle installed and on PYTHONPATH, in the background:
#   nohup bash benchmarks/sessions/2026-12-05-h100.sh >/tmp/session.log 2>&1 &
# then each call: OUT=$OUT bash benchmarks/profile-gpus.sh wait 540 (a snapshot of the stores).
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
date -u +"session: b1 at %T"
bash $P run "${B1_SECONDS:-480}" b1 -- sweep benchmarks/sweeps/h200-b1-vllm-variants.yaml \
  --db $D/b1-h100.db --resume-by model
date -u +"session: calibrations at %T"
bash $P start c1 -- calibrate -m llama-3.2-1b -e vllm --db $D/calibrate-h100.db
bash $P queue c3 -- calibrate -m llama-3.2-3b -e vllm --db $D/calibrate-h100.db
bash $P wait 3600
date -u +"session: done at %T"
