"""The launchers' own time per point group (issue 31's target: under 2 s), on a CPU with the
tiny model: one sweep through each launcher, its groups' time as the driver saw it (from
submission to its result merged) less the time the group's runner took inside its process.
What that leaves is the launcher's: starting the process, task or job, importing infergy,
sending the job and bringing its result back.

    PYTHONPATH=src python3 benchmarks/launcher_overhead.py [--workers 2] [--json OUT]

Ray runs a local cluster of two nodes declaring one logical GPU each
(`ray.cluster_utils.Cluster`); Slurm runs through submitit's local executor (no Slurm here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from infergy.plan import parse_spec
from infergy.run.launch import (
    LocalLauncher,
    RayLauncher,
    SlurmLauncher,
    launch_sweep,
    local_slots,
)

SPEC = {"models": ["tiny"], "engines": ["hf-eager", {"name": "hf-eager",
                                                     "options": {"use_cache": True}}],
        "input_tokens": [8, 16], "output_tokens": [2, 4], "batch_sizes": [1, 2, 4],
        "repeats": 1, "warmup": 0, "idle_s": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    spec = parse_spec(SPEC, "launcher overhead")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("local", "ray", "slurm"):
            db = Path(tmp) / f"{name}.db"
            t0 = time.perf_counter()
            cluster = None
            if name == "local":
                launcher = LocalLauncher(local_slots(1, "cpu", args.workers))
            elif name == "ray":
                from ray.cluster_utils import Cluster

                cluster = Cluster(initialize_head=True,
                                  head_node_args={"num_cpus": 1, "num_gpus": 1})
                for _ in range(args.workers - 1):
                    cluster.add_node(num_cpus=1, num_gpus=1)
                launcher = RayLauncher(cluster.address, 1, "cpu", None)
            else:
                launcher = SlurmLauncher(Path(tmp) / "slurm", 1, "cpu", args.workers,
                                         executor="local")
            up = time.perf_counter() - t0
            try:
                summary = launch_sweep(spec, db, launcher, device="cpu")
            finally:
                if cluster is not None:
                    cluster.shutdown()
            cost = summary.overhead_s
            rows.append({"launcher": name, "points": summary.measured, "groups": summary.groups,
                         "start_s": round(up, 2), "wall_s": round(summary.wall_s, 2),
                         "overhead_median_s": round(statistics.median(cost), 2),
                         "overhead_max_s": round(max(cost), 2),
                         "overhead_s": [round(c, 2) for c in cost]})
            print(f"{name:6} {summary.measured} points in {summary.groups} groups, "
                  f"{summary.wall_s:.1f} s (launcher up in {up:.1f} s); its own time a group: "
                  f"median {statistics.median(cost):.2f} s, at most {max(cost):.2f} s",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "processor": platform.processor() or platform.machine()},
            "workers": args.workers, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
