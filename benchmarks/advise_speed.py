"""How long `infergy advise` takes to search every profiled configuration for the built-in
code trace (issue 33's target: under 30 s on the 2-core machine).

    python3 benchmarks/advise_speed.py [--repeats 3] [--time-scale 1] [--workers N]

Searches the shipped profiles of llama-3.1-8b (every engine on every card) serving
azure-code-2023 online at its own times (or --time-scale times faster) for the targets
ttft_p90=2s,tpot_p90=50ms; prints each run's wall time, the configurations simulated and the
advice. The first run includes fitting the step-cost models (cached in the process after).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.estimate import Serving, advise_trace, parse_slo
from infergy.workloads import get_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--slo", default="ttft_p90=2s,tpot_p90=50ms")
    args = parser.parse_args()
    trace = get_trace("azure-code-2023")
    print(f"{os.cpu_count()} cores; azure-code-2023 ({len(trace)} requests), time scale "
          f"{args.time_scale:g}, targets {args.slo}")
    for k in range(args.repeats):
        start = time.perf_counter()
        advice = advise_trace(trace, "llama-3.1-8b", targets=parse_slo(args.slo),
                              serving=Serving("online", time_scale=args.time_scale),
                              workers=args.workers)
        took = time.perf_counter() - start
        chosen = advice.chosen
        print(f"run {k + 1}: {took:.1f} s, {len(advice.options)} configurations; advised "
              f"{chosen.config.words()} on {chosen.config.gpu}, {chosen.kwh:.4g} kWh")


if __name__ == "__main__":
    main()
