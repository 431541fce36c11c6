#!/usr/bin/env bash
# One H200 session's runs (issue 30's offline replay moved to 2026-12-06-h200.sh, which runs
# first), back to back on one card, each predicted before (the commits of
# docs/measurements/2026-12-05-h200-replays/ and 2026-12-05-advise-check-h200/):
#   1. one `infergy serve` start (vLLM's defaults) for issue 33's default runs (replica 0,
#      replica 1, all 400 on one card) and issue 30's code trace 4 times faster;
#   2. issue 33's advised configuration (`--serve vllm`, max_num_batched_tokens 2048);
#   3. vllm's validation points the shipped H200 profile lacks (a sweep: each point is stored
#      as it is measured, so a session that ends first keeps what it measured);
#   4. then issue 32's vLLM calibrations of five more models (h200-calibrations.sh).
# From the repository root, the vLLM bundle installed and on PYTHONPATH, in the background:
#   setsid nohup bash benchmarks/sessions/2026-12-05-h200.sh >/tmp/session.log 2>&1 </dev/null &
# (setsid: a chain started plainly dies with the call that started it, as on 2026-12-05 night)
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
T=docs/measurements/2026-12-05-advise-check-h200
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" && cp "$T"/*.csv "$D"/ || exit
bash $P base h200 src/infergy/profile/shipped/llama-3.1-8b-h200.db || exit

M="-m llama-3.1-8b"
ENDPOINT="--mode online --endpoint http://127.0.0.1:8000"
bash $P serve srv -- serve -m llama-3.1-8b -e vllm --port 8000 || exit
bash $P start r0 -- replay -t $D/code-201-600-replica0.csv $M $ENDPOINT --db $D/advise-h200.db
bash $P queue r1 -- replay -t $D/code-201-600-replica1.csv $M $ENDPOINT --db $D/advise-h200.db
bash $P queue one -- replay -t $D/code-201-600.csv $M $ENDPOINT --db $D/advise-h200.db
bash $P queue x4 -- replay -t azure-code-2023 $M $ENDPOINT --max-requests 1000 \
  --time-scale 4 --db $D/replays-h200.db
bash $P wait 3600
bash $P stop srv

bash $P start adv -- replay -t $D/code-201-600.csv $M --mode online --serve vllm \
  --engine-option max_num_batched_tokens=2048 --db $D/advise-h200.db
bash $P queue val -- sweep benchmarks/sweeps/h200-llama-3.1-8b.yaml -e vllm \
  --db $D/h200.db --resume-by model
bash $P wait 3600
exec bash "$(dirname "$0")/h200-calibrations.sh"  # issue 32's, for whatever time is left
