#!/usr/bin/env bash
# What an H100 advances next, when a session asking for an H200 is lent one (issue 32 first:
# the leave-one-model-out check on more models than the three llama-shaped ones measured on
# 2026-12-05; then issue 30 item 4's B = 1 trials left). Each command resumes what its store
# holds, so a session cut short keeps its points and the next one goes on:
#   1. olmoe-1b-7b, a mixture of experts, calibrated on vllm: the dense models' transfer
#      refuses it today, and the routed-experts prediction is to be checked on it (issue 32
#      asks where a mixture of experts predicted from dense models is worse);
#   2. whether the card's waiting power depends on the model loaded: one `infergy serve` start
#      with llama-3.2-1b and 100 requests of the code trace sent to it (its idle window is the
#      waiting power, against 118-120 W with llama-3.1-8b loaded);
#   3. olmo-7b, another family, calibrated on vllm;
#   4. llama-3.2-3b's calibration: its 5 missing design points (one engine start);
#   5. the B = 1 trials not measured (the sweep resumes by model).
# From the repository root, the vLLM bundle installed and on PYTHONPATH, in a session of its
# own so that it outlives the call that starts it:
#   setsid nohup bash benchmarks/sessions/next-h100.sh >/tmp/session.log 2>&1 </dev/null &
# then each call: OUT=$OUT bash benchmarks/profile-gpus.sh wait 540 (a snapshot of the stores).
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
B=docs/measurements/2026-12-05-h100-b1-and-calibrations
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
bash $P base calibrate-h100 $B/calibrate-h100.db || exit
bash $P base b1-h100 $B/b1-h100.db || exit
bash $P start moe -- calibrate -m olmoe-1b-7b -e vllm --db $D/calibrate-h100.db
bash $P wait 3600
bash $P serve srv -- serve -m llama-3.2-1b -e vllm --port 8000 &&
  bash $P start w1 -- replay -t azure-code-2023 -m llama-3.2-1b --mode online \
    --endpoint http://127.0.0.1:8000 --max-requests 100 --db $D/replays-h100.db &&
  bash $P wait 900
bash $P stop srv
bash $P start olmo -- calibrate -m olmo-7b -e vllm --db $D/calibrate-h100.db
bash $P queue c3 -- calibrate -m llama-3.2-3b -e vllm --db $D/calibrate-h100.db
bash $P queue b1 -- sweep benchmarks/sweeps/h200-b1-vllm-variants.yaml \
  --db $D/b1-h100.db --resume-by model
bash $P wait 3600
date -u +"session: done at %T"
