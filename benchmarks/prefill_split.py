"""Two ways of finding vLLM's prefill energy, on one engine start (issue 7).

    PYTHONPATH=/tmp/vllm-site:src python3 benchmarks/prefill_split.py --out "$OUT"

For each point, measured twice on the same loaded engine: with the engine stepped here and the
prefill window ended when the batch's last request has its first token (`stream`, the
default), then with `LLM.generate` and the prefill measured by a separate 1-token run
(`stream=false`). The request energy should agree; the prefill may differ by the decode steps
that chunked prefill overlaps with it. Writes OUT/prefill_split.jsonl and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.bench.point import Point, measure_point
from infergy.engines import engine_class
from infergy.meter import open_meter
from infergy.models import get_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--engine", default="vllm")
    ap.add_argument("--points", default="1x512x128,64x2048x32,1024x128x16", help="BxIxO,...")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = get_model(args.model)
    meter = open_meter(idle_s=5)
    engine = engine_class(args.engine)(spec, device="cuda")
    engine.load()
    print("| B | I | O | prefill by | request J | prefill J | TTFT s | CV |", flush=True)
    with (args.out / "prefill_split.jsonl").open("a") as log:
        for text in args.points.split(","):
            batch, inputs, outputs = (int(x) for x in text.split("x"))
            for stream in (True, False):
                engine.stream = stream
                r = measure_point(engine, Point(args.model, args.engine, batch, inputs, outputs),
                                  meter)
                log.write(json.dumps({**r.to_dict(), "stream": stream}, default=str) + "\n")
                log.flush()
                print(f"| {batch} | {inputs} | {outputs} | {r.prefill_method} | "
                      f"{r.energy_j} | {r.prefill_energy_j} | {r.ttft_s} | {r.energy_cv} |",
                      flush=True)
    engine.close()
    meter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
