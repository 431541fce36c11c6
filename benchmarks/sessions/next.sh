#!/usr/bin/env bash
# The next GPU session's runs, for whichever card is lent: an H200 runs the runs predicted for
# it (2026-12-05-h200.sh), an H100 what it advances (next-h100.sh). From the repository root,
# the vLLM bundle installed and on PYTHONPATH, in a session of its own so that it outlives the
# call that starts it:
#   setsid nohup bash benchmarks/sessions/next.sh >/tmp/session.log 2>&1 </dev/null &
# then each call: OUT=$OUT bash benchmarks/profile-gpus.sh wait 540 (a snapshot of the stores).
here=$(dirname "$0")
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "session: $card"
case "$card" in
  *H200*) exec bash "$here/2026-12-05-h200.sh" ;;
  *H100*) exec bash "$here/next-h100.sh" ;;
  *) echo "session: no plan for $card" >&2; exit 2 ;;
esac
