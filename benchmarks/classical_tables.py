"""The study's Table 4 layout for several traces and cards, in Markdown, from `infergy
estimate --json` itself (the same numbers a user gets): per trace and card, each engine's kWh
(infergy's simulated figure and the study's binned formula), its saving against the first
engine, and how far above the card's theoretical baseline it lies.

    python3 benchmarks/classical_tables.py [-m llama-3.1-8b] [--gpu h100,h200] \
        [-e hf-eager,vllm] [-t azure-code-2023 -t translation ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACES = ("azure-code-2023", "translation", "generation", "classification", "summarization")


def estimate(trace: str, model: str, gpus: str, engines: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "infergy", "estimate", "-t", trace, "-m", model,
                           "--gpu", gpus, "-e", engines, "--json"], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"infergy estimate -t {trace}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def kwh(value: float) -> str:
    return f"{value:.4g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="llama-3.1-8b")
    ap.add_argument("--gpu", default="h100,h200")
    ap.add_argument("-e", "--engine", default="hf-eager,vllm")
    ap.add_argument("-t", "--trace", action="append")
    args = ap.parse_args()
    engines = args.engine.split(",")
    head = ["trace", "card", *(f"{e} kWh (study's formula)" for e in engines),
            "theoretical", *(f"{e} above it" for e in engines)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for trace in args.trace or TRACES:
        result = estimate(trace, args.model, args.gpu, args.engine)
        requests = result["bins"]["binned"]
        for card in result["gpus"]:
            by = {e["engine"]: e for e in card["engines"]}
            theory_kwh = card["theoretical_j"] / 3.6e6
            cells = []
            for name in engines:
                e = by.get(name)
                if e is None:
                    cells.append("not measured")
                    continue
                saving = e["simulated_saving_vs_baseline"]
                cells.append(f"{kwh(e['simulated_kwh'])} ±{e['band']:.0%}"
                             + (f" (-{saving:.1%})" if name != engines[0] else "")
                             + f" ({kwh(e['kwh'])})")
            above = [f"+{by[n]['simulated_above_theoretical']:.1%}" if n in by else "-"
                     for n in engines]
            print(f"| {trace} ({requests:,}) | {card['gpu']} | " + " | ".join(cells)
                  + f" | {kwh(theory_kwh)} | " + " | ".join(above) + " |")


if __name__ == "__main__":
    main()
