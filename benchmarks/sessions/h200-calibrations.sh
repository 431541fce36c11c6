#!/usr/bin/env bash
# Issue 32's vLLM calibrations on the H200, after issue 30's runs (2026-12-05-h200.sh ends by
# starting this): llama-3.2-1b, llama-3.2-3b, olmo-7b, olmoe-1b-7b and
# deepseek-r1-distill-qwen-1.5b, `infergy calibrate`'s design each (an engine start and 24
# points; olmo-7b 12, olmoe-1b-7b 18: what their contexts hold), about 5-9 minutes a model on an
# H100. With llama-3.1-8b's shipped, three dense ones calibrated let `infergy estimate` predict a
# model measured nowhere on the H200; the 32B's is h200-deepseek-32b.sh. Each was predicted
# before any run, from its H100 points and llama-3.1-8b's ratio between the two cards
# (docs/measurements/2026-12-06-h200-calibrations-predicted/). Each calibration resumes by the
# card's model from its store, so a session cut short keeps its points. They go into h200.db,
# the store of llama-3.1-8b's validation points (2026-12-05-h200.sh): a call brings back at most
# 8 files, and the H200's chain has 4 stores beside its 4 logs (`infergy results merge -m MODEL`
# parts them). From the repository
# root, the vLLM bundle installed and on PYTHONPATH, in a session of its own:
#   setsid nohup bash benchmarks/sessions/h200-calibrations.sh >/tmp/session.log 2>&1 </dev/null &
# then each call as next.sh says.
set -u
P=benchmarks/profile-gpus.sh
D=/tmp/infergy-profile
export OUT=/tmp/infergy-session-out NO_SNAPSHOT=1
mkdir -p "$OUT" "$D" || exit
bash $P start c1 -- calibrate -m llama-3.2-1b -e vllm --db $D/h200.db
for m in llama-3.2-3b olmo-7b olmoe-1b-7b deepseek-r1-distill-qwen-1.5b; do
  bash $P queue "c-$m" -- calibrate -m "$m" -e vllm --db $D/h200.db
done
bash $P wait 7200
date -u +"session: done at %T"
