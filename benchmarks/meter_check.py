"""Check the meter on a real GPU: counter against sampled power, idle power, sampler cost.

Holds the GPU idle, then under a steady bf16 matmul load, then a device-to-device copy load,
each for at least --seconds, and prints for each phase: counter energy, sampled-power energy,
their disagreement and idle power. Then measures what the sampler costs the load: throughput
with no sampler against sampling power at 50 ms and 10 ms (and at 50 ms with the energy
counter read at every tick too), alternating runs, on the matmul load and on a launch-bound
load of many tiny kernels (where a Python thread competes hardest).

    PYTHONPATH=src python3 benchmarks/meter_check.py --out "$OUT"

Targets (issue 2): counter and sampled energy within 3% under steady load; sampling slows
the load by under 1%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy import provenance
from infergy.meter import Meter, open_meter


def matmul_load(torch, device):
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)

    def step():
        torch.matmul(a, b, out=c)

    return step, 2 * n**3, "TFLOP/s", 1e12


def copy_load(torch, device):
    n_bytes = 4 * 2**30
    src = torch.randn(n_bytes // 2, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)

    def step():
        dst.copy_(src)

    return step, 2 * n_bytes, "TB/s (read+write)", 1e12


def launch_bound_load(torch, device):
    x = torch.randn(4096, device=device)

    def step():
        for _ in range(100):
            x.mul_(1.0000001)

    return step, 100, "k kernels/s", 1e3


def run_for(torch, step, seconds: float, chunk: int = 10) -> int:
    """Run `step` in chunks until `seconds` have passed; returns the number of steps."""
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(chunk):
            step()
        torch.cuda.synchronize()
        done += chunk
    return done


def phase_row(name: str, m, gpu: str, rate: str = "") -> dict:
    d = m.device(gpu)
    avg_src = next(iter(d.other_sampled_j), None)
    return {
        "phase": name,
        "seconds": round(m.duration_s, 2),
        "counter_j": d.counter_energy_j,
        "sampled_j": d.sampled_energy_j,
        "sampled_source": d.sampled_source,
        "disagreement": d.disagreement,
        "other_source": avg_src,
        "other_disagreement": (d.other_sampled_j[avg_src] / d.counter_energy_j - 1)
        if avg_src and d.counter_energy_j else None,
        "avg_power_w": d.avg_power_w,
        "idle_w": d.idle_w,
        "active_j": d.active_energy_j,
        "samples": d.samples,
        "counter_update_ms": d.counter_update_s * 1000 if d.counter_update_s else None,
        "rate": rate,
        "warnings": list(m.warnings),
        "state_start": d.state_start,
        "state_end": d.state_end,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="each load phase (s)")
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle phases (s)")
    ap.add_argument("--cost-seconds", type=float, default=2.0, help="each sampler-cost run (s)")
    ap.add_argument("--cost-rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None, help="folder for meter_check.json/.md")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("meter_check: no CUDA GPU visible to torch; nothing to check", file=sys.stderr)
        return 2
    torch.cuda.init()
    device = torch.device("cuda:0")
    meter = open_meter(idle_s=0)
    if not meter.gpus:
        print(f"meter_check: NVML sees no GPU: {meter.unavailable}", file=sys.stderr)
        return 2
    gpu = meter.gpus[0].name
    info = meter.gpus[0].info
    print(f"{info.model} ({gpu}, {info.details['uuid']}), driver {info.details['driver']}, "
          f"power limit {info.details['power_limit_w']} W, counter {info.has_counter}, "
          f"power readings {info.power_sources}", flush=True)

    sensor = meter.gpus[0]
    latency = {}
    for label, read in (("energy counter", sensor.read_energy_j), ("power", sensor.read_power_w)):
        t0 = time.perf_counter()
        for _ in range(100):
            read()
        latency[label] = (time.perf_counter() - t0) / 100 * 1000
    print(f"one NVML read (ms): {latency}", flush=True)

    rows = []
    idle = meter.measure_idle(args.idle_s)
    rows.append(phase_row("idle (cold)", idle, gpu))
    print(f"idle (cold): {idle.device(gpu).avg_power_w:.1f} W", flush=True)

    loads = {}
    for name, make in (("matmul bf16 8192^3", matmul_load), ("copy 4 GiB d2d", copy_load)):
        step, work, unit, scale = make(torch, device)
        loads[name] = (step, work, unit, scale)
        run_for(torch, step, 3.0)  # warm-up: clocks and power settle
        with meter.window(name, record_state=True) as w:
            n = run_for(torch, step, args.seconds)
        rate = f"{n * work / w.measurement.duration_s / scale:.1f} {unit}"
        rows.append(phase_row(name, w.measurement, gpu, rate))
        print(f"{name}: {rate}, {w.measurement.device(gpu).avg_power_w:.0f} W", flush=True)

    hot_idle = Meter(meter.sensors, sample_period_s=meter.sample_period_s)
    hot_idle.idle_w = dict(meter.idle_w)
    m = hot_idle.measure_idle(args.idle_s)
    rows.append(phase_row("idle (just after load)", m, gpu))

    # Sampler cost: the same sensors, no sampler against sampling at 50 ms and 10 ms.
    step_mm = loads["matmul bf16 8192^3"][0]
    cost_loads = {"matmul bf16 8192^3": (step_mm, 10), "launch-bound tiny kernels":
                  (launch_bound_load(torch, device)[0], 1)}
    # label: (power sampling period, counter polling period between window edges)
    periods = {"none": (None, 1.0), "50 ms": (0.05, 1.0), "10 ms": (0.01, 1.0),
               "50 ms, counter every tick": (0.05, 0.0)}
    cost = []
    agreement = []
    for load_name, (step, chunk) in cost_loads.items():
        run_for(torch, step, 2.0, chunk)
        rates: dict[str, list[float]] = {p: [] for p in periods}
        busy: dict[str, list[float]] = {p: [] for p in periods}
        for _ in range(args.cost_rounds):
            for label, (period, counter_period) in periods.items():
                probe = Meter(meter.sensors, sample_period_s=period,
                              counter_period_s=counter_period)
                with probe.window(label) as w:
                    n = run_for(torch, step, args.cost_seconds, chunk)
                rates[label].append(n / w.measurement.duration_s)
                busy[label].append(probe.sampler_cpu_s / w.measurement.duration_s)
                d = w.measurement.device(gpu)
                agreement.append({"load": load_name, "period": label,
                                  "disagreement": d.disagreement, "samples": d.samples})
        base = statistics.median(rates["none"])
        spread = statistics.stdev(rates["none"]) / base if len(rates["none"]) > 1 else None
        for label in periods:
            cost.append({
                "load": load_name,
                "sampler": label,
                "steps_per_s": statistics.median(rates[label]),
                "runs": rates[label],
                "slowdown": 1 - statistics.median(rates[label]) / base,
                "baseline_cv": spread,
                "sampler_cpu_fraction": statistics.mean(busy[label]),
            })
    meter.close()

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "gpu": {"model": info.model, **info.details, "counter": info.has_counter,
                "power_sources": list(info.power_sources)},
        "versions": provenance.software_versions() | {"torch_cuda": torch.version.cuda},
        "host": provenance.host(),
        "sample_period_s": meter.sample_period_s,
        "read_latency_ms": latency,
        "phases": rows,
        "sampler_cost": cost,
        "sampled_agreement": agreement,
    }
    md = render(result)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "meter_check.json").write_text(json.dumps(result, indent=2, default=str))
        (args.out / "meter_check.md").write_text(md)
    return 0


def _pct(x):
    return "n/a" if x is None else f"{x:+.2%}"


def _num(x, digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}"


def render(r: dict) -> str:
    g = r["gpu"]
    lines = [
        f"{g['model']}, driver {g['driver']}, power limit {g['power_limit_w']} W; "
        f"torch {r['versions']['torch']} (CUDA {r['versions']['torch_cuda']}), "
        f"nvidia-ml-py {r['versions']['nvidia-ml-py']}; {r['date']}; sampler period "
        f"{r['sample_period_s'] * 1000:.0f} ms; one read of the counter "
        f"{r['read_latency_ms']['energy counter']:.2f} ms, of power "
        f"{r['read_latency_ms']['power']:.2f} ms",
        "",
        "| phase | s | counter J | sampled J (source) | disagreement | 1 s average J "
        "disagreement | avg W | idle W | above idle J | counter update ms | rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["phases"]:
        lines.append(
            f"| {p['phase']} | {p['seconds']} | {_num(p['counter_j'])} | "
            f"{_num(p['sampled_j'])} ({p['sampled_source']}) | {_pct(p['disagreement'])} | "
            f"{_pct(p['other_disagreement'])} | {_num(p['avg_power_w'])} | "
            f"{_num(p['idle_w'])} | {_num(p['active_j'])} | {_num(p['counter_update_ms'], 0)} | "
            f"{p['rate']} |"
        )
    lines += ["", "| load | sampler | median steps/s | slowdown vs none | CV of no-sampler runs "
              "| sampler thread CPU (share of one core) |", "|---|---|---|---|---|---|"]
    for c in r["sampler_cost"]:
        cv = "n/a" if c["baseline_cv"] is None else f"{c['baseline_cv']:.2%}"
        lines.append(f"| {c['load']} | {c['sampler']} | {c['steps_per_s']:.2f} | "
                     f"{_pct(c['slowdown'])} | {cv} | {c['sampler_cpu_fraction']:.2%} |")
    lines += ["", "| load | sampler | runs | sampled vs counter: mean | worst | readings per run |",
              "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for a in r["sampled_agreement"]:
        groups.setdefault((a["load"], a["period"]), []).append(a)
    for (load, period), runs in groups.items():
        d = [a["disagreement"] for a in runs if a["disagreement"] is not None]
        lines.append(f"| {load} | {period} | {len(runs)} | {_pct(statistics.mean(d))} | "
                     f"{_pct(max(d, key=abs))} | {statistics.median(a['samples'] for a in runs)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
