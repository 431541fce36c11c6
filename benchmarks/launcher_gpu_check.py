"""Issue 31's check on a GPU: one sweep through `--launcher ray` (a Ray of this machine, one
node) measures the same points as `--launcher local`, within the repeatability of
docs/measurements.md. Each launcher sweeps benchmarks/sweeps/launcher-check-llama-3.1-8b.yaml
into a store of its own under OUT; the points are compared by J per output token and time.

    PYTHONPATH=/tmp/ray-site:src python3 benchmarks/launcher_gpu_check.py --out $OUT

(Ray from benchmarks/ray-bundle.sh on the GPU machines.) Writes OUT/local.db, OUT/ray.db, the
sweeps' logs, and OUT/compare.json; prints the table.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SPEC = Path(__file__).parent / "sweeps" / "launcher-check-llama-3.1-8b.yaml"


def sweep(out: Path, launcher: str) -> dict:
    db = out / f"{launcher}.db"
    command = [sys.executable, "-m", "infergy", "sweep", str(SPEC), "--db", str(db),
               "--launcher", launcher]
    start = time.perf_counter()
    with (out / f"{launcher}.log").open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    print(f"{launcher}: exit {code}, {wall:.0f} s", flush=True)
    return {"launcher": launcher, "exit": code, "wall_s": wall, "command": " ".join(command)}


def points(db: Path) -> dict:
    rows = sqlite3.connect(db).execute(
        "SELECT batch, input_tokens, output_tokens, j_per_output_token, time_s, status, "
        "result FROM points")
    return {(b, i, o): {"j_per_token": j, "time_s": t, "status": s,
                        "energy_cv": json.loads(r).get("energy_cv")}
            for b, i, o, j, t, s, r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [sweep(args.out, "local"), sweep(args.out, "ray")]
    local, ray = points(args.out / "local.db"), points(args.out / "ray.db")
    rows = []
    print(f"{'B':>4} {'I':>5} {'O':>4} {'local J/tok':>11} {'ray J/tok':>10} {'diff':>7} "
          f"{'local s':>8} {'ray s':>8}")
    for key in sorted(set(local) | set(ray)):
        a, b = local.get(key, {}), ray.get(key, {})
        diff = (b["j_per_token"] / a["j_per_token"] - 1) if a.get("j_per_token") and \
            b.get("j_per_token") else None
        rows.append({"batch": key[0], "input": key[1], "output": key[2], "local": a, "ray": b,
                     "energy_diff": diff})
        print(f"{key[0]:>4} {key[1]:>5} {key[2]:>4} {a.get('j_per_token') or 0:>11.4f} "
              f"{b.get('j_per_token') or 0:>10.4f} "
              f"{'' if diff is None else f'{diff:+.1%}':>7} {a.get('time_s') or 0:>8.2f} "
              f"{b.get('time_s') or 0:>8.2f}")
    (args.out / "compare.json").write_text(json.dumps({"runs": runs, "points": rows},
                                                      indent=1) + "\n")


if __name__ == "__main__":
    main()
