#!/usr/bin/env bash
# One H200 session (issue 30 item 1 first: `infergy estimate --gpu h200` must work for every
# engine, and the shipped H200 profile holds hf-eager and vllm only), for about 15 minutes of
# the card:
#   1. vllm-eager's calibration design for llama-3.1-8b (about 8 minutes, its start included);
#   2. issue 30's offline replay, natural batches of 64 (512 requests, seed 0; about 4 minutes,
#      predicted in docs/measurements/2026-12-05-h200-replays/);
#   3. hf-compiled's calibration design (it compiles 30-56 s a shape: about 25 minutes, so
#      likely cut short; it resumes by model from its store in the next session);
#   4. then the 2026-12-05 plan (issue 30's online replays, issue 33's advise check, vllm's
#      validation points), for whatever time is left.
# Both calibrations were predicted before the run (docs/measurements/2026-12-06-h200-engines-
# predicted/). From the repository root, the vLLM bundle installed and on PYTHONPATH, in a
# session of its own:
#   setsid nohup bash benchmarks/sessions/2026-12-06-h200.sh >/tmp/session.log 2>&1 </dev/null &
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
bash $P base engines-h200 src/infergy/profile/shipped/llama-3.1-8b-h200.db || exit
bash $P start ve -- calibrate -m llama-3.1-8b -e vllm-eager --db $D/engines-h200.db
bash $P queue off -- replay -t azure-code-2023 -m llama-3.1-8b -e vllm --batching natural \
  -b 64 -n 512 --seed 0 --db $D/replays-h200.db
bash $P queue cc -- calibrate -m llama-3.1-8b -e hf-compiled --db $D/engines-h200.db
bash $P wait 7200
exec bash "$(dirname "$0")/2026-12-05-h200.sh"
