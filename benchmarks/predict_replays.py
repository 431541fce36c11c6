"""Predict replays before they are measured (issue 30 item 2): the serving simulator over an
engine's step-cost model of one card, on exactly the requests that `infergy replay` will send.

Online: the first N requests of a trace (replay's selection: those inside the study's bins) at
the trace's own times, divided by each --time-scale, through vLLM's server policy with its
default caps. Offline: a seeded sample of the trace in natural batches of B (arrival order),
each batch one run of the engine, as `infergy replay --batching natural -b B -n N` runs them.

    PYTHONPATH=src python3 benchmarks/predict_replays.py --card "NVIDIA H200" -e vllm \
        --first 1000 --time-scale 1 --time-scale 4 --natural 64 --sample 512 --seed 0 \
        --json predicted.json
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import numpy as np

from infergy.estimate.replays import planned
from infergy.estimate.served import step_model
from infergy.estimate.simulate import Served, policy_of, simulate
from infergy.models import get_model
from infergy.plan.batches import plan_natural, replay_requests
from infergy.profile.load import shipped_profiles
from infergy.workloads import BinGrid, get_trace
from infergy.workloads.arrivals import arrival_times


def figures(run: Served) -> dict:
    lat = run.latency()
    return {"requests": run.requests, "output_tokens": run.output_tokens,
            "energy_j": run.energy_j, "time_s": run.time_s, "idle_share": run.idle_share,
            "j_per_output_token": run.j_per_output_token,
            **{f"{k.removesuffix('_s')}_{p}_s": v[p] for k, v in lat.items() if v
               for p in ("p50", "p90", "p99")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default="llama-3.1-8b")
    ap.add_argument("--engine", "-e", default="vllm")
    ap.add_argument("--card", required=True, help="NVML's name, e.g. 'NVIDIA H200'")
    ap.add_argument("--trace", "-t", default="azure-code-2023")
    ap.add_argument("--first", type=int, help="online: the first N requests sent")
    ap.add_argument("--time-scale", type=float, action="append", default=[])
    ap.add_argument("--natural", type=int, help="offline: natural batches of B")
    ap.add_argument("--sample", type=int, help="offline: a seeded sample of N requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the predictions here")
    args = ap.parse_args()

    spec, trace = get_model(args.model), get_trace(args.trace)
    cost, summary, words = step_model(tuple(str(s) for s in shipped_profiles()), spec.name,
                                      args.engine, args.card)
    out = {"predicted_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "model": spec.name, "engine": args.engine, "card": args.card, "trace": args.trace,
           "step_cost": {"validation": summary, "in_words": words}, "runs": {}}
    _, everyone = replay_requests(trace, BinGrid.named("paper"), None, args.seed, args.trace,
                                  spec)
    for scale in args.time_scale:
        sent = arrival_times(trace, everyone, "trace", time_scale=scale)  # sorted, as sent
        order = np.argsort(trace.arrival_s[everyone], kind="stable")[:args.first]
        requests, times = everyone[order], sent[:args.first]
        run = simulate(cost, trace.input_tokens[requests], trace.output_tokens[requests],
                       times, policy=policy_of(cost, online=True),
                       serving=f"online, trace x{scale:g}")
        out["runs"][f"online trace x{scale:g}, first {len(requests)}"] = figures(run)
    if args.natural:
        _, chosen = replay_requests(trace, BinGrid.named("paper"), args.sample, args.seed,
                                    args.trace, spec)
        inputs, outputs, groups = planned(plan_natural(trace, chosen, args.natural), trace)
        run = simulate(cost, inputs, outputs, policy=policy_of(cost), batches=groups,
                       serving="offline, natural batches")
        out["runs"][f"offline natural B={args.natural}, sample {args.sample} seed "
                    f"{args.seed}"] = figures(run)
    for name, f in out["runs"].items():
        print(f"{name}: {f['requests']} requests, {f['energy_j'] / 1e3:.2f} kJ in "
              f"{f['time_s']:.1f} s ({f['j_per_output_token']:.3f} J/token), TTFT p90 "
              f"{f.get('ttft_p90_s', float('nan')):.3f} s, TPOT p90 "
              f"{f.get('tpot_p90_s', float('nan')) * 1e3:.1f} ms")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
