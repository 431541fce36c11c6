"""Measure a few points on every engine, all on one card in one run (issue 3).

    PYTHONPATH=src python3 benchmarks/gpu_points.py --out "$OUT"
    PYTHONPATH=src python3 benchmarks/gpu_points.py --engines vllm,vllm-eager --out "$OUT"
    PYTHONPATH=src python3 benchmarks/gpu_points.py --engines hf-paged+use_cuda_graph=true \
        --points 32x512x128 --out "$OUT"

Default: llama-3.1-8b, random bf16 weights, greedy, (B, I, O) = (1, 512, 128), (32, 512, 128)
and (128, 512, 128), on hf-eager, hf-compiled and hf-paged. Every result is appended to
OUT/gpu_points.jsonl the moment it is measured; OUT/gpu_points.md gets the table of every
result in that file (so several invocations into one OUT make one table). An engine may carry
options, `name+key=value+key=value` (values are JSON where they parse as JSON). Also
measures the copy bandwidth, to put the B = 1 decode step against the memory roofline
(weight bytes / copy bandwidth). Stops starting new work once --budget-s has passed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.engines import engine_class, parse_options
from infergy.meter import open_meter
from infergy.models import get_model
from infergy.models.flops import weight_bytes as analytic_weight_bytes
from infergy.plan.point import Point
from infergy.run.point import measure_point


def copy_bandwidth_tb_s(torch) -> float:
    """Device-to-device copy of 4 GiB, bytes read + written per second, median of 10."""
    src = torch.empty(2 * 2**30, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 4 * 2**30 / sorted(times[3:])[len(times[3:]) // 2] / 1e12


def parse_engine(label: str) -> tuple[str, dict]:
    """`hf-paged+use_cuda_graph=true+block_size=128` -> ("hf-paged", {...})."""
    name, *items = label.split("+")
    return name, parse_options(items)


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--engines", default="hf-eager,hf-compiled,hf-paged")
    ap.add_argument("--points", default="1x512x128,32x512x128,128x512x128", help="BxIxO,...")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--out", type=Path, help="folder for gpu_points.jsonl and .md")
    ap.add_argument("--render", type=Path, nargs="+", metavar="JSONL",
                    help="measure nothing: print the table of these result files")
    args = ap.parse_args()
    if args.render:
        print(render(read_records(args.render)), end="")
        return 0
    if args.out is None:
        ap.error("--out is required to measure")

    import torch

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "gpu_points.jsonl").open("a")
    spec = get_model(args.model)
    points = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]

    bandwidth = copy_bandwidth_tb_s(torch)
    print(f"copy bandwidth {bandwidth:.2f} TB/s", flush=True)
    meter = open_meter(idle_s=args.idle_s)
    print(f"idle {meter.idle_w}", flush=True)
    weights = None
    for label in args.engines.split(","):
        if time.perf_counter() - t0 > args.budget_s:
            print(f"budget spent: {label} not run", flush=True)
            break
        name, options = parse_engine(label)
        engine = engine_class(name)(spec, device="cuda", options=options)
        try:
            with meter.window("load") as w:
                engine.load()
        except Exception as err:
            print(f"{name}: load failed: {type(err).__name__}: {err}", flush=True)
            log.write(json.dumps({"engine": label, "status": "load failed",
                                  "error": f"{type(err).__name__}: {err}"}) + "\n")
            log.flush()
            continue
        load = {"time_s": w.measurement.duration_s, "energy_j": w.measurement.energy_j}
        if weights is None and hasattr(engine, "model"):
            weights = weight_bytes(engine.model)
        print(f"{label}: loaded in {load['time_s']:.1f} s, {load['energy_j']} J", flush=True)
        try:
            for batch, i, o in points:
                if time.perf_counter() - t0 > args.budget_s:
                    print(f"budget spent: {label} {batch}x{i}x{o} not run", flush=True)
                    continue
                r = measure_point(engine, Point(args.model, name, batch, i, o), meter,
                                  repeats=args.repeats, warmup=args.warmup)
                record = {**r.to_dict(), "label": label, "load": load,
                          "engine_info": engine.info(), "copy_bandwidth_tb_s": bandwidth,
                          "weight_bytes": weights or analytic_weight_bytes(spec)}
                log.write(json.dumps(record, default=str) + "\n")
                log.flush()
                print(f"{label} B={batch}: {r.status} {r.error or ''} "
                      f"J/tok {r.j_per_output_token} TPOT {r.tpot_s} time {r.time_s} "
                      f"prepare {r.prepare}", flush=True)
        finally:
            engine.close()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    meter.close()
    log.close()
    md = render(read_records([args.out / "gpu_points.jsonl"]))
    (args.out / "gpu_points.md").write_text(md)
    print(md)
    return 0


def read_records(paths: list[Path]) -> list[dict]:
    return [r for path in paths for r in map(json.loads, path.open()) if "point" in r]


def _f(x, fmt=".3g"):
    return "n/a" if x is None else format(x, fmt)


def render(rows: list[dict]) -> str:
    """The table of measured points; the head from the first record's provenance."""
    if not rows:
        return "no points measured\n"
    first = rows[0]
    gpu = (first["provenance"]["gpus"] or [{}])[0]
    bandwidth = first.get("copy_bandwidth_tb_s")
    weights = first.get("weight_bytes")
    roofline_s = weights / (bandwidth * 1e12) if weights and bandwidth else None
    idle = first["provenance"]["idle_w"]
    head = (f"{gpu.get('model', 'no GPU')}, driver {gpu.get('driver', '-')}; "
            f"copy bandwidth {_f(bandwidth, '.2f')} TB/s; weights {_f(weights and weights / 1e9)} "
            f"GB; memory roofline of one decode step {_f(roofline_s and roofline_s * 1000)} ms; "
            f"idle {', '.join(f'{k} {v:.0f} W' for k, v in idle.items())}")
    lines = [head, "",
             "| engine | B | status | J/output token | time s | TTFT s | TPOT ms | vs roofline "
             "| tok/s | avg W | prefill J | decode J | energy CV | prepare s (J) | load s (J) |",
             "|" + "---|" * 15]
    for r in rows:
        p = r["point"]
        tpot = r["tpot_s"]
        ratio = tpot / roofline_s if tpot and roofline_s and p["batch"] == 1 else None
        prep = r["prepare"] or {}
        lines.append(
            f"| {r.get('label', p['engine'])} | {p['batch']} | {r['status']} | "
            f"{_f(r['j_per_output_token'])} | "
            f"{_f(r['time_s'])} | {_f(r['ttft_s'])} | {_f(tpot and tpot * 1000)} | "
            f"{_f(ratio, '.2f')} | {_f(r['throughput_tok_s'], '.0f')} | "
            f"{_f(r['avg_power_w'], '.0f')} | {_f(r['prefill_energy_j'])} | "
            f"{_f(r['decode_energy_j'])} | {_f(r['energy_cv'], '.1%')} | "
            f"{_f(prep.get('time_s'))} ({_f(prep.get('energy_j'))}) | "
            f"{_f(r['load']['time_s'])} ({_f(r['load']['energy_j'])}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
