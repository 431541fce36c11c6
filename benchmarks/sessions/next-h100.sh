#!/usr/bin/env bash
# What an H100 advances next, when a session asking for an H200 is lent one (issue 32 first:
# the leave-one-model-out check over a second mixture of experts and a second engine; then
# issue 30 item 4's B = 1 trials left). Each command resumes what its store holds (calibrate
# by the card's model), so a session cut short keeps its points and the next one goes on.
# Done on 2026-12-06 (docs/measurements/2026-12-06-h100-calibrations/):
# llama-3.2-3b's last 5 design points and deepseek-r1-distill-qwen-1.5b on vllm; then
# (docs/measurements/2026-12-06-h100-morning/) qwen3-30b-a3b's first 2 points (its engine
# starts in 5 minutes; its design's windows are predicted at about 5 more, its B = max searches
# aside). Issue 32's hf-eager calibrations need no vLLM: they run first, in calls of their own
# (hf-eager-calls.sh). Left here:
#   1. DeepSeek-R1-Distill-Qwen-32B on vllm, four times the largest model the H100's transfer
#      was fitted to: calibrate's design and 12 study bins (h200-deepseek-32b.yaml) at B = 1
#      and at the B = max an 80 GB card holds (its weights left vLLM 6.9 GiB of KV cache: a
#      batch of 2 at 8,192 inputs), predicted from the H100's five dense models before any run
#      (docs/measurements/2026-12-06-deepseek-32b-predicted/, step 1). No H200 came in three
#      sessions for issue 30's plan of it (h200-deepseek-32b.sh), whose B = max and
#      speculative pair want one; its B = 1 points fit any card that holds its weights. Done
#      on 2026-12-06 (docs/measurements/2026-12-06-h100-deepseek-32b/, the base here): the
#      design and 11 study-bin points; left, the other 13 (about 4 minutes after its start);
#   2. qwen3-30b-a3b, a second mixture of experts, calibrated on vllm (its prediction
#      committed: docs/measurements/2026-12-06-qwen3-moe-predicted/);
#   3. the B = 1 trials not measured (the sweep resumes by model).
# From the repository root, the vLLM bundle installed and on PYTHONPATH, in a session of its
# own so that it outlives the call that starts it:
#   setsid nohup bash benchmarks/sessions/next-h100.sh >/tmp/session.log 2>&1 </dev/null &
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
B=docs/measurements/2026-12-05-h100-b1-and-calibrations
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
M=docs/measurements/2026-12-06-h100-morning
bash $P base qwen3-h100 $M/qwen3-30b-a3b-h100.db || exit
bash $P base b1-h100 $B/b1-h100.db || exit
bash $P base deepseek-32b-h100 docs/measurements/2026-12-06-h100-deepseek-32b/deepseek-32b-h100.db \
  || exit
bash $P start q32 -- sweep benchmarks/sweeps/h200-deepseek-32b.yaml \
  --db $D/deepseek-32b-h100.db --resume-by model
bash $P queue moe -- calibrate -m qwen3-30b-a3b -e vllm --db $D/qwen3-h100.db
bash $P queue b1 -- sweep benchmarks/sweeps/h200-b1-vllm-variants.yaml \
  --db $D/b1-h100.db --resume-by model
bash $P wait 3600
date -u +"session: done at %T"
