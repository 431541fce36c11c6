"""How well the step-cost model and the serving simulator predict what was measured (issue 29),
on a CPU, from stores already measured:

1. Inside the grid: each engine's model fitted to the 24 points of the calibration design and
   predicting the profile's other points (energy and time, by batch).
2. Every replay and online run in the stores given: the simulator on exactly what each ran,
   against its measured energy, with the study's formula's error beside it.
3. Speed: the built-in code trace simulated online at its own times and offline, and 1,000,000
   requests (the trace repeated, its times continued).

    PYTHONPATH=src python3 benchmarks/validate_simulator.py [--replays STORE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import glob
import json
import sqlite3
import time

import numpy as np

from infergy.estimate import design, errors, fit_step_cost, measured, simulate
from infergy.estimate.replays import replay_engine, simulate_replay
from infergy.estimate.simulate import policy_of
from infergy.profile.load import shipped_profiles
from infergy.workloads import get_trace
from infergy.workloads.arrivals import arrival_times

MODEL = "llama-3.1-8b"
CARD = "NVIDIA H100 80GB HBM3"  # the card whose profile is complete (the H200's is begun)
ENGINES = ("hf-eager", "hf-compiled", "vllm", "vllm-eager")


def in_grid(stores) -> dict:
    out = {}
    for engine in ENGINES:
        data = measured(stores, MODEL, engine, CARD)
        inside, rest = design(data.windows)
        out[engine] = {"design": len(inside), "predicted": len(rest),
                       **errors(fit_step_cost(data, inside), rest)["summary"]}
        print(f"{engine}: fitted to {len(inside)}, predicting {len(rest)}")
        for group, s in out[engine].items():
            if isinstance(s, dict):
                e, t = s["energy_error"], s["time_error"]
                print(f"  {group:>5} ({s['points']}): energy median {e['median']:.1%} p90 "
                      f"{e['p90']:.1%}; time median {t['median']:.1%} p90 {t['p90']:.1%}")
    return out


def replays(stores, paths: list[str]) -> list[dict]:
    costs = {e: fit_step_cost(measured(stores, MODEL, e, CARD)) for e in ENGINES}
    trace = get_trace("azure-code-2023")
    rows = []
    for path in paths:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = db.execute("SELECT result FROM replays").fetchall()
        except sqlite3.Error:
            continue
        for (text,) in found:
            replay = json.loads(text)
            engine = replay_engine(replay)
            gpus = (replay.get("provenance") or {}).get("gpus") or [{}]
            if (replay.get("tp", 1) != 1 or engine not in costs or replay["status"] != "ok"
                    or gpus[0].get("model") != CARD):
                continue
            served = simulate_replay(costs[engine], replay, trace)
            study = ((replay.get("estimate") or {}).get("errors") or {}).get("binned")
            row = {"store": path, "engine": engine, "mode": replay["mode"],
                   "batching": replay["batching"], "requests": replay["requests"],
                   "measured_j": replay["energy_j"], "simulated_j": served.energy_j,
                   "error": served.energy_j / replay["energy_j"] - 1,
                   "measured_s": replay["time_s"], "simulated_s": served.time_s,
                   "time_error": served.time_s / replay["time_s"] - 1,
                   "study_error": study, "simulated_latency": served.latency(),
                   "measured_latency": replay.get("latency"),
                   "idle_share": [served.idle_share, replay.get("idle_share")]}
            rows.append(row)
            print(f"{path}: {engine} {replay['mode']} {replay['batching']}: measured "
                  f"{replay['energy_j'] / 1e3:.1f} kJ in {replay['time_s']:.0f} s, simulated "
                  f"{served.energy_j / 1e3:.1f} kJ in {served.time_s:.0f} s "
                  f"({row['error']:+.1%}; time {row['time_error']:+.1%}); study's formula "
                  f"{'-' if study is None else f'{study:+.1%}'}")
    return rows


def speed(stores) -> dict:
    cost = fit_step_cost(measured(stores, MODEL, "vllm", CARD))
    trace = get_trace("azure-code-2023")
    times = arrival_times(trace, np.arange(len(trace)), "trace")
    out = {}
    for name, arrival, policy in (("online", times, policy_of(cost, online=True)),
                                  ("online x4", times / 4, policy_of(cost, online=True)),
                                  ("offline", None, policy_of(cost))):
        start = time.perf_counter()
        simulate(cost, trace.input_tokens, trace.output_tokens, arrival, policy=policy)
        out[f"{len(trace)} {name}"] = time.perf_counter() - start
    reps = -(-1_000_000 // len(trace))
    span = float(times[-1]) + 1
    big_in = np.tile(trace.input_tokens, reps)[:1_000_000]
    big_out = np.tile(trace.output_tokens, reps)[:1_000_000]
    big_t = (np.tile(times, reps) + np.repeat(np.arange(reps) * span, len(trace)))[:1_000_000]
    start = time.perf_counter()
    simulate(cost, big_in, big_out, big_t, policy=policy_of(cost, online=True))
    out["1000000 online"] = time.perf_counter() - start
    for k, v in out.items():
        print(f"speed: {k}: {v:.2f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", nargs="*", default=sorted(glob.glob(
        "docs/measurements/2026-1[12]-*/**/*.db", recursive=True)))
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    stores = shipped_profiles(MODEL)
    result = {"in_grid": in_grid(stores), "replays": replays(stores, args.replays)}
    if not args.no_speed:
        result["speed_s"] = speed(stores)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
