"""A trace's energy on one engine and GPU from its profile's B = max points.

- Binned, the study's formula: E = sum over bins of N / B x E_batch(I*, O*), with B the
  measured largest batch of the bin and E_batch the energy of that batch; also with ceil(N / B)
  (whole batches: the honest count when N is small).
- Interpolated, beyond the study: each request's energy at its own lengths, interpolated in log
  space across the measured grid (bilinear in log I, log O of log J per request at B = max),
  instead of charging every request at its bin's ceiling.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from infergy.estimate.served import Simulated
from infergy.profile.load import EstimateError, MissingPoints, Profile, own_store
from infergy.workloads.bins import BinGrid, Binned
from infergy.workloads.trace import Trace

J_PER_KWH = 3.6e6


@dataclass
class Estimate:
    """One engine's estimate of a trace on one GPU."""

    engine: str
    gpu: str
    requests: int  # binned requests
    output_tokens: int  # their real output tokens
    energy_j: float  # the study's formula, N / B
    energy_whole_batches_j: float  # ceil(N / B)
    interpolated_j: float | None
    bins: list[dict]  # per (I*, O*): N, B, E_batch, energies
    simulated: Simulated | None = None  # the headline: the trace served, simulated
    simulation_error: str | None = None  # why there is none
    # Bins whose B = max point is the card's calibrated model's, not measured: how many, the
    # requests and energy they hold, the model's error band (infergy.estimate.filled).
    predicted: dict | None = None

    @property
    def j_per_request(self) -> float:
        """The study's formula per binned request, in J."""
        return self.energy_j / self.requests

    @property
    def j_per_output_token(self) -> float | None:
        """The study's formula per real output token, in J; None where the requests generated
        no token (a trace of zero outputs has no energy per output token)."""
        return self.energy_j / self.output_tokens if self.output_tokens else None

    @property
    def kwh(self) -> float:
        """The study's formula in kWh."""
        return self.energy_j / J_PER_KWH


def estimate(trace: Trace, binned: Binned, profile: Profile) -> Estimate:
    """The binned estimate (N / B and whole batches) and the interpolated one, from the
    trace binned once (`grid.assign`) for every engine. EstimateError where no request falls
    in the bins; MissingPoints (its `missing` bins) where the profile lacks some it needs."""
    grid = binned.grid
    if not binned.kept.any():
        raise EstimateError(f"{trace.name}: none of its {len(trace)} requests falls in the bins "
                            f"(all past the last edge, input {grid.input_edges[-1]} or output "
                            f"{grid.output_edges[-1]}): use other bins or --beyond clamp")
    counts = binned.counts()
    needed = needed_bins(counts, grid)
    missing = [key for key in needed if key not in profile.points]
    if missing:
        raise MissingPoints(_missing_message(profile, missing), missing)
    bins, total, whole = [], 0.0, 0.0
    for (i, o) in needed:
        n = int(counts[grid.input_edges.index(i), grid.output_edges.index(o)])
        p = profile.points[(i, o)]
        share = n / p["batch"] * p["energy_j"]
        batches = math.ceil(n / p["batch"]) * p["energy_j"]
        bins.append({"input": i, "output": o, "requests": n, "batch": p["batch"],
                     "batch_energy_j": p["energy_j"], "energy_j": share,
                     "whole_batches_energy_j": batches, "point": p["id"],
                     "predicted": bool(p.get("predicted"))})
        total += share
        whole += batches
    kept = binned.kept
    guessed = [b for b in bins if b["predicted"]]
    predicted = None if not guessed else {
        **(profile.predicted or {}), "bins": len(guessed), "of_bins": len(bins),
        "requests": sum(b["requests"] for b in guessed),
        "energy_j": sum(b["energy_j"] for b in guessed)}
    measured_only = {k: p for k, p in profile.points.items() if not p.get("predicted")}
    return Estimate(profile.engine, profile.gpu, int(kept.sum()),
                    int(trace.output_tokens[kept].sum()), total, whole,
                    _interpolated(trace, kept, measured_only), bins, predicted=predicted)


def needed_bins(counts: np.ndarray, grid: BinGrid) -> list[tuple[int, int]]:
    """The bins (I*, O*) of `grid` that `counts` (Binned.counts) holds requests in."""
    return [(grid.input_edges[i], grid.output_edges[o])
            for i, o in zip(*np.nonzero(counts), strict=True)]


def _interpolated(trace: Trace, kept: np.ndarray, points: dict) -> float | None:
    """Sum over requests of J per request at B = max, bilinear in log space over the measured
    grid of `points` ((I, O) -> point; lengths under the first measured edge are taken at
    it), in J. None where the measured points do not form a full grid."""
    ins = sorted({i for i, _ in points})
    outs = sorted({o for _, o in points})
    if len(ins) < 2 or len(outs) < 2 or any((i, o) not in points for i in ins for o in outs):
        return None
    per_request = np.array([[points[(i, o)]["energy_j"] / points[(i, o)]["batch"]
                             for o in outs] for i in ins])
    log_e = np.log(per_request)
    li, lo = np.log(ins), np.log(outs)
    x = np.log(np.clip(trace.input_tokens[kept], ins[0], ins[-1]))
    y = np.log(np.clip(trace.output_tokens[kept], outs[0], outs[-1]))
    a = np.clip(np.searchsorted(li, x) - 1, 0, len(ins) - 2)
    b = np.clip(np.searchsorted(lo, y) - 1, 0, len(outs) - 2)
    tx = (x - li[a]) / (li[a + 1] - li[a])
    ty = (y - lo[b]) / (lo[b + 1] - lo[b])
    value = ((1 - tx) * (1 - ty) * log_e[a, b] + tx * (1 - ty) * log_e[a + 1, b]
             + (1 - tx) * ty * log_e[a, b + 1] + tx * ty * log_e[a + 1, b + 1])
    return float(np.exp(value).sum())


def _missing_message(profile: Profile, missing: list[tuple[int, int]]) -> str:
    """What a profile lacking `missing` bins says: the bins, and a sweep spec measuring them."""
    grids = json.dumps([{"input_tokens": [i], "output_tokens": [o]} for i, o in missing])
    shown = ", ".join(f"I={i} O={o}" for i, o in missing[:12])
    more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    # A store of the user's: a shipped one is the package's (own_store).
    db, after = own_store(profile.sources[:1], profile.model) if profile.sources else ("FILE", "")
    return (f"{profile.model} on {profile.engine} ({profile.gpu}) has no B = max point for "
            f"{len(missing)} bins the trace needs: {shown}{more}. Measure them with a spec "
            f"holding\n  models: [{profile.model}]\n  engines: [{profile.engine}]\n"
            f"  batch_sizes: [max]\n  grids: {grids}\nand `infergy sweep SPEC --db {db}`"
            f"{after}")
