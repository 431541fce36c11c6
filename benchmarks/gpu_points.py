"""Measure a few points on every engine, all on one card in one run (issue 3).

    PYTHONPATH=src python3 benchmarks/gpu_points.py --out "$OUT"
    PYTHONPATH=src python3 benchmarks/gpu_points.py --engines vllm,vllm-eager --out "$OUT"

Default: llama-3.1-8b, random bf16 weights, greedy, (B, I, O) = (1, 512, 128), (32, 512, 128)
and (128, 512, 128), on hf-eager, hf-compiled and hf-paged. Every result is appended to
OUT/gpu_points.jsonl the moment it is measured; OUT/gpu_points.md gets the table. Also
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

from infergy.bench.point import Point, measure_point
from infergy.engines import engine_class
from infergy.meter import open_meter
from infergy.models import get_model


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
    ap.add_argument("--engine-option", action="append", default=[], help="engine:key=value")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "gpu_points.jsonl").open("a")
    spec = get_model(args.model)
    points = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]
    options: dict[str, dict] = {}
    for item in args.engine_option:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        options.setdefault(name, {})[key] = json.loads(value) if value[:1].isdigit() else value

    bandwidth = copy_bandwidth_tb_s(torch)
    print(f"copy bandwidth {bandwidth:.2f} TB/s", flush=True)
    meter = open_meter(idle_s=args.idle_s)
    print(f"idle {meter.idle_w}", flush=True)
    rows = []
    weights = None
    for name in args.engines.split(","):
        if time.perf_counter() - t0 > args.budget_s:
            print(f"budget spent: {name} not run", flush=True)
            break
        engine = engine_class(name)(spec, device="cuda", options=options.get(name))
        try:
            with meter.window("load") as w:
                engine.load()
        except Exception as err:
            print(f"{name}: load failed: {type(err).__name__}: {err}", flush=True)
            log.write(json.dumps({"engine": name, "status": "load failed",
                                  "error": f"{type(err).__name__}: {err}"}) + "\n")
            log.flush()
            continue
        load = {"time_s": w.measurement.duration_s, "energy_j": w.measurement.energy_j}
        if weights is None and hasattr(engine, "model"):
            weights = weight_bytes(engine.model)
        print(f"{name}: loaded in {load['time_s']:.1f} s, {load['energy_j']} J", flush=True)
        for batch, i, o in points:
            if time.perf_counter() - t0 > args.budget_s:
                print(f"budget spent: {name} {batch}x{i}x{o} not run", flush=True)
                continue
            r = measure_point(engine, Point(args.model, name, batch, i, o), meter,
                              repeats=args.repeats, warmup=args.warmup)
            record = {**r.to_dict(), "load": load, "engine_info": engine.info()}
            log.write(json.dumps(record, default=str) + "\n")
            log.flush()
            rows.append(record)
            print(f"{name} B={batch}: {r.status} {r.error or ''} J/tok {r.j_per_output_token} "
                  f"TPOT {r.tpot_s} time {r.time_s} prepare {r.prepare}", flush=True)
        engine.close()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    meter.close()
    if weights is None:
        from infergy.models.flops import weight_bytes as analytic_weight_bytes

        weights = analytic_weight_bytes(spec)
    roofline_s = weights / (bandwidth * 1e12)
    md = render(rows, bandwidth, weights, roofline_s, meter)
    (args.out / "gpu_points.md").write_text(md)
    print(md)
    return 0


def _f(x, fmt=".3g"):
    return "n/a" if x is None else format(x, fmt)


def render(rows, bandwidth, weights, roofline_s, meter) -> str:
    gpu = meter.gpus[0].info if meter.gpus else None
    head = (f"{gpu.model if gpu else 'no GPU'}, driver {gpu.details['driver'] if gpu else '-'}; "
            f"copy bandwidth {bandwidth:.2f} TB/s; weights {_f(weights and weights / 1e9)} GB; "
            f"memory roofline of one decode step {_f(roofline_s and roofline_s * 1000)} ms; "
            f"idle {', '.join(f'{k} {v:.0f} W' for k, v in meter.idle_w.items())}")
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
            f"| {p['engine']} | {p['batch']} | {r['status']} | {_f(r['j_per_output_token'])} | "
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
