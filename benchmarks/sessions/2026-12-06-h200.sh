#!/usr/bin/env bash
# One H200 session (issue 30 item 1 first: `infergy estimate --gpu h200` must work for every
# engine, and the shipped H200 profile holds hf-eager and vllm only):
#   1. hf-compiled's calibration design for llama-3.1-8b (no vLLM needed: it starts in the call
#      that carries the bundle's first part);
#   2. vllm-eager's (the bundle installed by then);
#   3. then the 2026-12-05 plan (issue 30's replays, issue 33's advise check, vllm's validation
#      points), for whatever time is left.
# Both calibrations were predicted before the run (docs/measurements/2026-12-06-h200-engines-
# predicted/). Each resumes by model from its store, so a session cut short keeps its points.
# From the repository root, in a session of its own:
#   export PYTHONPATH=/tmp/vllm-site:$PYTHONPATH
#   setsid nohup bash benchmarks/sessions/2026-12-06-h200.sh >/tmp/session.log 2>&1 </dev/null &
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
bash $P base engines-h200 src/infergy/profile/shipped/llama-3.1-8b-h200.db || exit
bash $P start cc -- calibrate -m llama-3.1-8b -e hf-compiled --db $D/engines-h200.db
bash $P queue ve -- calibrate -m llama-3.1-8b -e vllm-eager --db $D/engines-h200.db
bash $P wait 3600
until python3 -c "import vllm" 2>/dev/null; do sleep 5; done  # the bundle, for step 3
exec bash "$(dirname "$0")/2026-12-05-h200.sh"
