"""Issue 30's check of a calibrated profile, on a CPU, from a store that measured every bin:
keep only the calibration design and the validation bins (what an H200 calibration measures),
let the card's step-cost model predict the other bins' B = max points
(infergy.estimate.filled), and compare each with the point measured there; then the study's
formula for a trace on the reduced profile against the full one.

    PYTHONPATH=src python3 benchmarks/validate_calibrated.py \
        src/infergy/profile/shipped/llama-3.1-8b-h100.db [--engine vllm] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
from pathlib import Path

import numpy as np

from infergy.estimate.binned import estimate
from infergy.estimate.filled import fill_profile
from infergy.plan.presets import CALIBRATION_INPUTS, CALIBRATION_OUTPUTS
from infergy.profile.load import MissingPoints, load_profile
from infergy.workloads import get_trace
from infergy.workloads.bins import BinGrid

MODEL = "llama-3.1-8b"
VALIDATION = [(i, o) for i in (128, 512, 1024, 4096) for o in (16, 128, 256)]
KEPT = {(i, o) for i in CALIBRATION_INPUTS for o in CALIBRATION_OUTPUTS} | set(VALIDATION)


def reduced(store: Path, folder: Path) -> Path:
    """A copy of `store` holding only the points of KEPT bins."""
    path = folder / "calibrated.db"
    src = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    dst = sqlite3.connect(path)
    src.backup(dst)
    dst.execute(f"DELETE FROM points WHERE (input_tokens, output_tokens) NOT IN "
                f"(VALUES {', '.join(f'({i}, {o})' for i, o in sorted(KEPT))})")
    dst.commit()
    dst.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--engine", action="append")
    parser.add_argument("--trace", default="azure-code-2023")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trace = get_trace(args.trace)
    binned = BinGrid.named("paper").assign(trace.input_tokens, trace.output_tokens)
    report = []
    with tempfile.TemporaryDirectory() as folder:
        small = reduced(args.store, Path(folder))
        for engine in args.engine or ["hf-eager", "hf-compiled", "vllm", "vllm-eager"]:
            full = load_profile([args.store], MODEL, engine)
            part = load_profile([small], MODEL, engine)
            others = sorted(set(full.points) - set(part.points))
            filled = fill_profile(part, MissingPoints("", others))
            rows = []
            for key in others:
                p, m = filled.points[key], full.points[key]
                rows.append({"bin": key, "batch_predicted": p["batch"], "batch_measured":
                             m["batch"], "energy_error": (p["energy_j"] / p["batch"])
                             / (m["energy_j"] / m["batch"]) - 1})
            same_b = [r for r in rows if r["batch_predicted"] == r["batch_measured"]]
            err = np.abs([r["energy_error"] for r in rows])
            whole = estimate(trace, binned, full).energy_j
            try:
                guessed = estimate(trace, binned, filled).energy_j
            except MissingPoints as e:
                guessed = None
                print(f"{engine}: {e}")
            report.append({"engine": engine, "bins_predicted": len(rows),
                           "same_batch": len(same_b), "j_per_request_error_median":
                           float(np.median(err)), "p90": float(np.percentile(err, 90)),
                           "max": float(err.max()), "trace_full_j": whole,
                           "trace_calibrated_j": guessed, "bins": rows})
            print(f"{engine}: {len(rows)} bins predicted; B = max as measured at "
                  f"{len(same_b)}; J per request |error| median {np.median(err):.1%}, p90 "
                  f"{np.percentile(err, 90):.1%}, max {err.max():.1%}"
                  + ("" if guessed is None else f"; {args.trace} by the study's formula "
                     f"{guessed / whole - 1:+.1%} against every bin measured"))
            off = [r for r in rows if r["batch_predicted"] != r["batch_measured"]]
            if off:
                print("  B = max off at " + ", ".join(
                    f"{i}/{o}: {r['batch_predicted']} for {r['batch_measured']}"
                    for r in off for i, o in [r["bin"]]))
            same = [abs(r["energy_error"]) for r in same_b]
            if same:
                print(f"  where B is as measured: median {statistics.median(same):.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
