"""When a trace's requests arrive: the trace's own timestamps (scaled by a time scale) or a
seeded Poisson process at a rate; the same arrivals for a run served online
(infergy.run.online) and for its simulation (infergy.estimate.simulate)."""

from __future__ import annotations

import numpy as np

from infergy.workloads.trace import Trace

ARRIVALS = ("trace", "poisson")


class ArrivalError(ValueError):
    """Arrivals that cannot be made as asked; the message names the option."""


def arrival_times(trace: Trace, requests: np.ndarray, process: str, *, rate: float | None = None,
                  time_scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """Seconds from the run's start at which each of `requests` arrives, the i-th time the
    i-th request's: "trace", the request's own time in the trace (a trace file need not be
    sorted by time) less the first, divided by `time_scale`; "poisson", `rate` a second,
    seeded, in the order of `requests`."""
    if process == "trace":
        if trace.arrival_s is None:
            raise ArrivalError(f"{trace.name} has no arrival times: use --rate or --concurrency")
        if not time_scale > 0:
            raise ArrivalError(f"--time-scale must be positive, got {time_scale}")
        times = trace.arrival_s[requests]
        return (times - times.min()) / time_scale if len(times) else times
    if process == "poisson":
        if rate is None or not rate > 0:
            raise ArrivalError(f"--rate must be a positive number of requests a second, got "
                               f"{rate}")
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=len(requests))
        return np.concatenate([[0.0], np.cumsum(gaps[1:])])
    raise ArrivalError(f"arrivals must be one of {', '.join(ARRIVALS)}, got {process!r}")
