#!/usr/bin/env bash
# What an H100 advances next, when a session asking for an H200 is lent one. Each command
# resumes what its store holds (calibrate by the card's model, a sweep by model), so a session
# cut short keeps its points and the next one goes on.
# Done on H100s on 2026-12-06: every vllm and hf-eager calibration issue 32 asked of this card
# (docs/measurements/2026-12-06-h100-*/), the last of them in the evening
# (2026-12-06-h100-evening/): DeepSeek-R1-Distill-Qwen-32B's 12 study bins completed and
# qwen3-30b-a3b calibrated on vllm. Left here, issue 30's, the study's experiments first (the
# study measured on A6000s and A100s: an H100 answers them as well as an H200, and says so):
#   1. temperature and top-p sampling against greedy on vllm, at B = 1 and B = max on four bins
#      (benchmarks/sweeps/h200-decoding-llama-3.1-8b.yaml, one vLLM start; about 10 minutes);
#   2. the length sweeps on vllm (benchmarks/sweeps/length-sweep-llama-3.1-8b.yaml: 46 points
#      at B = 1, one start; about 11 minutes);
#   3. the batch sweep 1 to 1,024 at 512 / 128 (the preset batch-sweep) on vllm and vllm-eager,
#      one start each (about 4 minutes each; hf-eager's and hf-compiled's run in
#      hf-eager-calls.sh, which needs no vLLM);
#   4. the 32B's speculative pair (item 3) at the batches an 80 GB card holds at once beside
#      the draft (1 and 8, by the KV cache's bytes; at 32 and 128 vLLM would queue what its
#      cache cannot hold, an H200's batches): greedy, then acceptance 0.8 and 0.5, one vLLM
#      start each;
#   5. the B = 1 trials not measured (item 4; the sweep resumes by model).
# The study's experiments (1-3) share one store, study-h100.db, so that a call's snapshot stays
# within the 8 files a call brings back (4 stores and 4 logs).
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
E=docs/measurements/2026-12-06-h100-evening
bash $P base b1-h100 $B/b1-h100.db || exit
bash $P base deepseek-32b-h100 $E/deepseek-32b-h100.db || exit
bash $P start dec -- sweep benchmarks/sweeps/h200-decoding-llama-3.1-8b.yaml -e vllm \
  --db $D/study-h100.db --resume-by model
bash $P queue len -- sweep benchmarks/sweeps/length-sweep-llama-3.1-8b.yaml \
  --db $D/study-h100.db --resume-by model
bash $P queue bs -- sweep batch-sweep -m llama-3.1-8b -e vllm --db $D/study-h100.db \
  --resume-by model
bash $P queue bse -- sweep batch-sweep -m llama-3.1-8b -e vllm-eager --db $D/study-h100.db \
  --resume-by model
bash $P queue spec -- sweep benchmarks/sweeps/h200-speculative-deepseek-32b.yaml -b 1 -b 8 \
  --db $D/deepseek-32b-h100.db --resume-by model
bash $P queue b1 -- sweep benchmarks/sweeps/h200-b1-vllm-variants.yaml \
  --db $D/b1-h100.db --resume-by model
bash $P wait 3600
date -u +"session: done at %T"
