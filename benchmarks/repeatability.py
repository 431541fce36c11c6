"""Where does the run-to-run spread of a launch-bound point come from? (issue 7)

    PYTHONPATH=src python3 benchmarks/repeatability.py --out "$OUT"

Runs one point (default hf-eager, llama-3.1-8b, B = 1, 2048 in, 128 out) `--runs` times in
each of three settings: Python's garbage collector as usual, and collected before each run and
held off during it (what infergy's point runner does), these two in turn; then, last, held
off with the launching thread pinned to one CPU (is the spread the thread moving between
CPUs?). Last, because threads started while it is pinned stay pinned after (seen on a CPU:
torch's own threads, every later run 10x slower). For every run:
time, GPU energy, and the decode steps' time distribution (median, p90, max, and the time
lost to steps over 1.5x the median), which tells spikes (collections, preemption of the
launching thread) from a uniformly slower run (clocks, contention). Writes
OUT/repeatability.jsonl and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.engines import engine_class
from infergy.engines.decoding import Decoding
from infergy.meter import open_meter
from infergy.models import get_model
from infergy.models.build import make_prompts


def steps_summary(times: list[float]) -> dict:
    steps = [b - a for a, b in itertools.pairwise(times)]
    if not steps:
        return {}
    median = statistics.median(steps)
    ranked = sorted(steps)
    return {"step_median_ms": median * 1e3, "step_p90_ms": ranked[int(0.9 * len(ranked))] * 1e3,
            "step_max_ms": ranked[-1] * 1e3,
            "lost_to_slow_steps_s": sum(s - median for s in steps if s > 1.5 * median)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--engine", default="hf-eager")
    ap.add_argument("--point", default="1x2048x128", help="BxIxO")
    ap.add_argument("--runs", type=int, default=6, help="runs per setting")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    batch, inputs, outputs = (int(x) for x in args.point.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    spec = get_model(args.model)
    meter = open_meter(idle_s=5)
    engine = engine_class(args.engine)(spec, device=args.device)
    engine.load()
    greedy = Decoding.parse("greedy")
    prompts = make_prompts(spec, batch, inputs, seed=0)
    engine.prepare(batch, inputs, outputs, greedy)
    engine.generate(prompts, outputs, greedy)  # warm-up
    print(f"cpus {os.cpu_count()}, affinity {len(os.sched_getaffinity(0))}, load "
          f"{os.getloadavg()}", flush=True)
    rows = []
    cpus = os.sched_getaffinity(0)
    settings = ("gc as usual", "gc held", "gc held, pinned")
    with (args.out / "repeatability.jsonl").open("a") as log:
        for block in range(len(settings) * args.runs):
            setting = settings[block % 2] if block < 2 * args.runs else settings[2]
            gc.collect()
            if setting != "gc as usual":
                gc.disable()
            if setting.endswith("pinned"):  # this thread only: the one launching the kernels
                os.sched_setaffinity(0, {min(cpus)})
            try:
                with meter.window("run") as w:
                    gen = engine.generate(prompts, outputs, greedy)
            finally:
                gc.enable()
                os.sched_setaffinity(0, cpus)
            m = w.measurement
            row = {"engine": args.engine, "point": args.point, "setting": setting,
                   "time_s": m.duration_s, "energy_j": m.energy_j, "avg_power_w": m.avg_power_w,
                   "gpu": meter.gpus[0].info.model if meter.gpus else None,
                   **steps_summary(gen.token_times_s)}
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    for setting in settings:
        sel = [r for r in rows if r["setting"] == setting]
        for key in ("time_s", "energy_j"):
            values = [r[key] for r in sel if r[key] is not None]
            if len(values) > 1:
                print(f"{setting}: {key} mean "
                      f"{statistics.mean(values):.3g}, CV "
                      f"{statistics.stdev(values) / statistics.mean(values):.1%}", flush=True)
    engine.close()
    meter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
