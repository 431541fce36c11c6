"""Latency targets as `infergy advise --slo` takes them: `ttft_p90=500ms,tpot_p90=50ms`, the
percentiles of the simulator's TTFT, TPOT and end-to-end latency (infergy.estimate.simulate)
that a configuration must not exceed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from infergy.profile.load import EstimateError

METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}
PERCENTILES = ("p50", "p90", "p99")


@dataclass(frozen=True)
class Target:
    """A latency target: the `percentile` of `metric` (ttft_s, tpot_s, e2e_s) at most
    `limit_s` seconds."""

    metric: str
    percentile: str
    limit_s: float

    @property
    def name(self) -> str:
        """As the user writes it: ttft_p90."""
        return f"{self.metric.removesuffix('_s')}_{self.percentile}"

    def words(self) -> str:
        return f"{self.name} <= {seconds_words(self.limit_s)}"


def parse_slo(text: str) -> list[Target]:
    """`ttft_p90=500ms,tpot_p90=50ms,e2e_p99=30s` as Targets, `none` as none (the least energy
    at any latency); EstimateError naming the part that is not one (metric ttft, tpot or e2e;
    percentile p50, p90 or p99; a time in ms or s)."""
    if text.strip().lower() == "none":
        return []
    targets: dict[str, Target] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        metric, _, percentile = name.strip().lower().partition("_")
        if not eq or metric not in METRICS or percentile not in PERCENTILES:
            raise EstimateError(f"--slo: {part!r} is not a target; expected METRIC_PCT=TIME "
                                f"with METRIC one of {', '.join(METRICS)} and PCT one of "
                                f"{', '.join(PERCENTILES)}, e.g. ttft_p90=500ms,tpot_p90=50ms")
        found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s)\s*", value.lower())
        if not found or float(found[1]) <= 0:
            raise EstimateError(f"--slo: {name.strip()}: {value.strip()!r} is not a time; "
                                f"expected a positive number with its unit, ms or s "
                                f"(500ms, 2s)")
        limit = float(found[1]) / (1000 if found[2] == "ms" else 1)
        target = Target(METRICS[metric], percentile, limit)
        targets[target.name] = target  # the last of a repeated one wins, as on a command line
    if not targets:
        raise EstimateError("--slo: no target given; expected e.g. ttft_p90=500ms,tpot_p90=50ms")
    return list(targets.values())


def seconds_words(value: float | None) -> str:
    """A latency as the tables print it: 250 ms, 1.62 s, 1,352 s; n/a for None."""
    if value is None:
        return "n/a"
    return (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3g} s" if value < 100
            else f"{value:,.0f} s")
