#!/usr/bin/env bash
# Issue 30's 32B on an H200 (and issue 32's calibration of it), the one plan that needs an H200
# whatever is lent (`run` with needs_h200): DeepSeek-R1-Distill-Qwen-32B's 65.5 GB of weights
# leave an 80 GB card about 8 GB of KV cache (a batch of 4 at 8,192 inputs), and its
# speculative pair at batch 128 wants about 93 GB. Two stages: the first one vLLM start, the
# second three, one a decoding (about 3-4 minutes a start for 32B):
#   1. calibrate's design and 12 study bins at B = 1 and B = max
#      (benchmarks/sweeps/h200-deepseek-32b.yaml; B = 1 predicted before the run:
#      docs/measurements/2026-12-06-deepseek-32b-predicted/);
#   2. the study's second speculative pair, batch 1, 8, 32 and 128, greedy then acceptance 0.8
#      and 0.5 (benchmarks/sweeps/h200-speculative-deepseek-32b.yaml).
# Each resumes by model from the store, so a session cut short keeps its points. From the
# repository root, the vLLM bundle installed and on PYTHONPATH, in a session of its own:
#   setsid nohup bash benchmarks/sessions/h200-deepseek-32b.sh >/tmp/session.log 2>&1 </dev/null &
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "session: $card"
case "$card" in
  *H200*) ;;
  *) echo "session: the 32B's B = max and its speculative batch 128 need an H200" >&2; exit 2 ;;
esac
db=$D/deepseek-32b-h200.db
bash $P start q32 -- sweep benchmarks/sweeps/h200-deepseek-32b.yaml --db $db --resume-by model
bash $P queue spec -- sweep benchmarks/sweeps/h200-speculative-deepseek-32b.yaml --db $db \
  --resume-by model
bash $P wait 7200
date -u +"session: done at %T"
