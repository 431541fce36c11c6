#!/usr/bin/env bash
# The next GPU session's runs, for whichever card is lent: an H200 runs the runs predicted for
# it (2026-12-06-h200.sh, then 2026-12-05-h200.sh), an H100 what it advances (next-h100.sh). From the repository root,
# the vLLM bundle installed and on PYTHONPATH, in a session of its own so that it outlives the
# call that starts it:
#   setsid nohup bash benchmarks/sessions/next.sh >/tmp/session.log 2>&1 </dev/null &
# then each call waits for the chain's end or 540 s, and snapshots the stores under $OUT
# (`profile-gpus.sh wait` alone returns at once while a server starts or between two stages):
#   end=$(( $(date +%s) + 540 )); until grep -q "session: done" /tmp/session.log ||
#     [ "$(date +%s)" -ge $end ]; do sleep 5; done; OUT=$OUT bash benchmarks/profile-gpus.sh wait 1
# and adds the session's own log: `cp /tmp/session.log $OUT/`. A call brings back at most 8
# files from $OUT: the snapshot's stores (4 in the H200's plan), commands.log (every command's
# log), servers.log, gpus.csv and session.log fit; copying each log beside them does not.
# Make each call at once after the last: a machine goes back 30 s after a call, and its
# session with it (2026-12-06: lost so between the first and second call, 9 minutes of the
# card gone). Nothing needs copying between calls: each call's files come back in a folder
# of their own. The first call can carry the bundle's part00 and measure in the same call
# what needs no vLLM: `bash benchmarks/sessions/hf-eager-calls.sh "" 480` (on an H200, issue
# 32's hf-eager calibrations of llama-3.2-1b and -3b; on an H100 issue 30's sampling and length
# sweeps on hf-eager). The 32B's plan
# (h200-deepseek-32b.sh) is the one that asks for an H200 with `needs_h200`: its B = max and
# its speculative batch 128 do not fit an 80 GB card; start it instead of this script then.
# Asking for a card: ask `status` first (it is free) and call only while it names no `none_now`.
# A refused call that names no kind mostly cost 180 s of the 30 minutes (an H100 tried, then
# an H200), one naming its kind (nvidia-h100-x1 or nvidia-h200) mostly 90 s, one during
# `none_now` 15 s: on 2026-12-06/07 (22:30-00:10 UTC) 12 refused calls took 1,546 s, no card came.
here=$(dirname "$0")
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "session: $card"
case "$card" in
  *H200*) exec bash "$here/2026-12-06-h200.sh" ;;
  *H100*) exec bash "$here/next-h100.sh" ;;
  *) echo "session: no plan for $card" >&2; exit 2 ;;
esac
