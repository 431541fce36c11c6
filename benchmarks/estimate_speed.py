"""How fast a big trace is loaded, binned and estimated (issue 5's target: 5 million requests
in Azure format under 5 s on a 2-core machine).

    python3 benchmarks/estimate_speed.py [--requests 5000000] [--keep DIR]

Writes a synthetic Azure-format CSV (lengths drawn like the 2023 code trace: lognormal inputs,
heavy-tailed outputs; timestamps 0.7 ms apart) and a profile store with a made-up B = max point
for every paper bin (the numbers do not matter for speed), then times, apart:
loading (infergy.workloads.load_trace), binning (BinGrid.assign + counts) and estimating
(binned + interpolated, and the theoretical baseline). Writing the files is not timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.estimate import estimate, load_profile, theoretical
from infergy.models.gpus import get_gpu
from infergy.store import Store
from infergy.workloads import BinGrid, load_trace


def write_trace(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    inputs = np.clip(rng.lognormal(7.2, 1.0, n), 1, 7437).astype(np.int64)
    outputs = np.clip(rng.pareto(1.2, n) * 8 + 1, 1, 2000).astype(np.int64)
    start = np.datetime64("2023-11-16T18:00:00")
    stamps = (start + (np.arange(n) * 700).astype("timedelta64[us]")).astype(str)
    with path.open("w") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        step = 500_000
        for k in range(0, n, step):
            rows = np.char.add(np.char.add(np.char.replace(stamps[k:k + step], "T", " "), ","),
                               np.char.add(np.char.add(inputs[k:k + step].astype(str), ","),
                                           outputs[k:k + step].astype(str)))
            f.write("\n".join(rows.tolist()) + "\n")


def write_profile(path: Path, grid: BinGrid) -> None:
    with Store(path) as store:
        run = store.start_run(device="synthetic", meta={"gpus": [{"model": "NVIDIA H100 80GB "
                                                                   "HBM3"}]}, spec=None)
        for i in grid.input_edges:
            for o in grid.output_edges:
                point = {"model": "llama-3.1-8b", "engine": "vllm", "batch": 64,
                         "input_tokens": i, "output_tokens": o, "decoding": "greedy", "tp": 1,
                         "dtype": "bfloat16"}
                store.add_point(run, "synthetic", {"point": point, "status": "ok",
                                                   "energy_j": 1e-3 * i + 0.5 * o},
                                engine_options="{}", batch_requested="max")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=5_000_000)
    ap.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="infergy-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    trace_path, db = folder / "trace.csv", folder / "profile.db"
    grid = BinGrid.named("paper")
    if not trace_path.exists():
        print(f"writing {args.requests:,} requests to {trace_path} (not timed) ...", flush=True)
        write_trace(trace_path, args.requests)
    if not db.exists():
        write_profile(db, grid)
    t0 = time.perf_counter()
    trace = load_trace(trace_path)
    t1 = time.perf_counter()
    binned = grid.assign(trace.input_tokens, trace.output_tokens)
    binned.counts()
    t2 = time.perf_counter()
    result = estimate(trace, binned, load_profile([db], "llama-3.1-8b", "vllm"))
    optimal = theoretical(binned, "llama-3.1-8b", get_gpu("h100"))
    t3 = time.perf_counter()
    print(f"{len(trace):,} requests ({binned.coverage()['binned']:,} binned): load "
          f"{t1 - t0:.2f} s, bin {t2 - t1:.2f} s, estimate {t3 - t2:.2f} s (binned, "
          f"interpolated, theoretical), total {t3 - t0:.2f} s")
    print(f"check: {result.energy_j / 3.6e6:.4g} kWh binned, {result.interpolated_j / 3.6e6:.4g} "
          f"kWh interpolated, {optimal / 3.6e6:.4g} kWh theoretical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
