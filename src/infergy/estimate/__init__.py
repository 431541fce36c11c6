"""Estimate a workload's energy from measured points (the study's section 4), and what a FLOPs
count would have said.

- Binned, the study's formula: E = sum over bins of N / B x E_batch(I*, O*), with B the
  measured largest batch of the bin and E_batch the energy of that batch; also with ceil(N / B)
  (whole batches: the honest count when N is small).
- Interpolated, beyond the study: each request's energy at its own lengths, interpolated in log
  space across the measured grid (bilinear in log I, log O of log J per request at B = max),
  instead of charging every request at its bin's ceiling.
- Theoretical, the study's baseline: TDP / peak FLOPS x the FLOPs of every request at its
  binned lengths (infergy.models.flops), on a datasheet GPU (hardware.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from infergy.models.gpus import NVML_NAMES, Gpu, UnknownGpuError, get_gpu
from infergy.workloads.bins import Binned
from infergy.workloads.trace import Trace

J_PER_KWH = 3.6e6


# The shipped profiles' folder
PROFILES = Path(str(resources.files("infergy") / "profile" / "shipped"))


def shipped_profiles(model: str | None = None) -> list[Path]:
    """The results stores shipped in infergy/profile/shipped/ (read when no profile is given), one a
    card, named MODEL-CARD.db; with `model`, that model's only."""
    return sorted(f for f in PROFILES.iterdir() if f.name.endswith(".db")
                  and (model is None or f.name.startswith(f"{model}-")))


class EstimateError(ValueError):
    """An estimate that cannot be made; the message says what is missing and how to get it."""


class MissingPoints(EstimateError):
    """A profile without the B = max points of some bins a trace needs (`missing`, as (I, O);
    None: without any point of this model, engine and GPU)."""

    def __init__(self, message: str, missing: list[tuple[int, int]] | None = None):
        super().__init__(message)
        self.missing = missing


@dataclass
class Profile:
    """Measured energy of one model on one engine and GPU, at B = max, per (I, O)."""

    model: str
    engine: str
    gpu: str  # the card's name as measured (NVML)
    points: dict[tuple[int, int], dict]  # (I, O) -> {"batch", "energy_j", "id", ...}
    sources: list[str] = field(default_factory=list)


def load_profile(stores: list[Path], model: str, engine: str, gpu: str | None = None,
                 decoding: str = "greedy") -> Profile:
    """The newest ok B = max point of each (I, O) for this model and engine in the stores,
    on one GPU (`gpu`: a hardware.py name or an NVML name; None: the only one there), the
    model on that GPU alone (TP 1: the estimate is of one GPU's work)."""
    return _profile(_points_by_gpu(stores, model, engine, decoding), stores, model, engine,
                    None if gpu is None else get_gpu(gpu).name, gpu)


def load_card_profile(stores: list[Path], model: str, engine: str, card: str,
                      decoding: str = "greedy", shipped: bool = False) -> Profile:
    """As load_profile, on the card a run is on: `card` as NVML names it (the meter's
    reading; a card infergy's GPU table lacks is matched by that name). `shipped`: the stores
    are the profiles shipped with infergy (the message says how to add this card's).
    MissingPoints where the stores hold no point of this model and engine on that card: a
    profile's B = max is its own card's, and another card's may not fit this one."""
    found = _points_by_gpu(stores, model, engine, decoding)
    if any(_card(g) == _card(card) for g in found):
        return _profile(found, stores, model, engine, _card(card), card)
    held = f"they hold it on {', '.join(sorted(found))}" if found else \
        f"they hold no B = max point of it on {engine}"
    other = ("; or name a card they hold with --gpu (its B and its estimate are that card's)"
             if found else "")
    mine = [p for p in stores if p.name.startswith(f"{model}-")]
    how = _how_to_measure(model, engine, card, repository=shipped and bool(mine))
    where = (f"shipped: {', '.join(p.name for p in mine) or 'none of it'}" if shipped
             else ", ".join(map(str, stores)))
    raise MissingPoints(f"no {'shipped ' if shipped else ''}profile of {model} on {engine} for "
                        f"{card}, the card this runs on ({where}; {held}): {how}{other}")


def _how_to_measure(model: str, engine: str, card: str | None, repository: bool) -> str:
    """How to measure a missing profile of `model` on `card` (a hardware.py or NVML name;
    None: not known): with the repository's sweep into the shipped store of that card where
    `repository` (the model's profile is shipped for other cards, made so), else with a sweep
    of one's own, passed as --profile."""
    if not repository:
        return (f"measure one with `infergy sweep paper-bins -m {model} -e {engine} -b max "
                f"--db FILE` and pass --profile FILE")
    try:  # as the shipped stores' names give it: h100 (the SXM card the scripts accept), h200
        tag = get_gpu(card).name.split("-")[0] if card else "CARD"
    except UnknownGpuError:
        tag = "CARD"
    return (f"measure it on that card with the repository's sweep, `infergy sweep "
            f"benchmarks/sweeps/profile-{model}.yaml "
            f"--db src/infergy/profile/shipped/{model}-{tag}.db "
            f"--resume-by model` (benchmarks/profile-gpus.sh runs it on every GPU of a host)")


def _points_by_gpu(stores: list[Path], model: str, engine: str,
                   decoding: str) -> dict[str, dict[tuple[int, int], dict]]:
    """GPU as measured (NVML name) -> the newest ok B = max point of each (I, O), at TP 1."""
    from infergy.store import Store

    found: dict[str, dict[tuple[int, int], dict]] = {}
    for path in stores:
        with Store(path, create=False) as store:
            gpus = {r["id"]: r["gpu_name"] for r in store.runs()}
            for p in store.points(model=model, engine=engine, decoding=decoding, tp=1,
                                  engine_options="{}", batch_requested="max", status="ok"):
                if p["energy_j"] is None:  # measured where no energy sensor could be read
                    continue
                name = gpus.get(p["run_id"]) or p["device"]
                found.setdefault(name, {})[(p["input_tokens"], p["output_tokens"])] = {
                    "batch": p["batch"], "energy_j": p["energy_j"], "time_s": p["time_s"],
                    "id": p["id"], "store": str(path)}
    return found


def _card(measured_name: str) -> str:
    """A GPU as measured -> its hardware.py name (the NVML name where the table lacks it)."""
    return NVML_NAMES.get(measured_name, measured_name)


def _profile(found: dict[str, dict[tuple[int, int], dict]], stores: list[Path], model: str,
             engine: str, card: str | None, asked: str | None = None) -> Profile:
    """The Profile of one GPU out of `found` (`card`: a hardware.py name; None: the only
    one there)."""
    if card is not None:
        found = {k: v for k, v in found.items() if _card(k) == card}
    where = ", ".join(map(str, stores))
    if not found:
        on = asked or card
        raise MissingPoints(f"no B = max points of {model} on {engine}"
                            f"{f' on {on}' if on else ''} in {where}: measure them with "
                            f"`infergy sweep paper-bins -m {model} -e {engine} -b max"
                            f"{f' --db {stores[0]}' if len(stores) == 1 else ''}`")
    if len(found) > 1:
        raise EstimateError(f"{where} hold {model} on {engine} for several GPUs "
                            f"({', '.join(found)}): choose one with --gpu")
    (name, points), = found.items()
    return Profile(model, engine, name, points, [str(s) for s in stores])


@dataclass
class Estimate:
    engine: str
    gpu: str
    requests: int  # binned requests
    output_tokens: int  # their real output tokens
    energy_j: float  # the study's formula, N / B
    energy_whole_batches_j: float  # ceil(N / B)
    interpolated_j: float | None
    bins: list[dict]  # per (I*, O*): N, B, E_batch, energies

    @property
    def j_per_request(self) -> float:
        return self.energy_j / self.requests

    @property
    def j_per_output_token(self) -> float:
        return self.energy_j / self.output_tokens

    @property
    def kwh(self) -> float:
        return self.energy_j / J_PER_KWH


def estimate(trace: Trace, binned: Binned, profile: Profile) -> Estimate:
    """The binned estimate (N / B and whole batches) and the interpolated one, from the
    trace binned once (`grid.assign`) for every engine."""
    grid = binned.grid
    if not binned.kept.any():
        raise EstimateError(f"{trace.name}: none of its {len(trace)} requests falls in the bins "
                            f"(all past the last edge, input {grid.input_edges[-1]} or output "
                            f"{grid.output_edges[-1]}): use other bins or --beyond clamp")
    counts = binned.counts()
    needed = [(grid.input_edges[i], grid.output_edges[o]) for i, o in zip(*np.nonzero(counts),
                                                                         strict=True)]
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
                     "whole_batches_energy_j": batches, "point": p["id"]})
        total += share
        whole += batches
    kept = binned.kept
    return Estimate(profile.engine, profile.gpu, int(kept.sum()),
                    int(trace.output_tokens[kept].sum()), total, whole,
                    _interpolated(trace, kept, profile), bins)


def _interpolated(trace: Trace, kept: np.ndarray, profile: Profile) -> float | None:
    """Sum over requests of J per request at B = max, bilinear in log space over the measured
    grid (lengths under the first measured edge are taken at it). None where the measured
    points do not form a full grid."""
    ins = sorted({i for i, _ in profile.points})
    outs = sorted({o for _, o in profile.points})
    if len(ins) < 2 or len(outs) < 2 or any((i, o) not in profile.points
                                           for i in ins for o in outs):
        return None
    per_request = np.array([[profile.points[(i, o)]["energy_j"] / profile.points[(i, o)]
                             ["batch"] for o in outs] for i in ins])
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


def theoretical(binned: Binned, model_name: str, gpu: Gpu) -> float:
    """The study's baseline: TDP / peak FLOPS x the FLOPs of every binned request, in J."""
    from infergy.models import get_model
    from infergy.models.flops import request_flops

    spec = get_model(model_name)
    grid, counts = binned.grid, binned.counts()
    flops = sum(int(counts[a, b]) * request_flops(spec, grid.input_edges[a],
                                                    grid.output_edges[b])
                for a, b in zip(*np.nonzero(counts), strict=True))
    return flops * gpu.joules_per_flop


@dataclass
class CardEstimate:
    """A trace on each engine asked for, on one GPU, against the first engine (the baseline of
    the savings) and the theoretical baseline."""

    gpu: str  # the card's name as measured (NVML)
    estimates: list[Estimate]  # the engines estimated, the baseline first
    unmeasured: dict[str, MissingPoints]  # engines after the first lacking bins (or every one)
    theoretical_j: float  # the study's baseline on `theoretical_gpu`, in J
    theoretical_gpu: Gpu
    stores: list[str]  # the stores holding this GPU's points

    @property
    def baseline(self) -> Estimate:
        return self.estimates[0]

    def saving(self, result: Estimate) -> float:
        """The share of the baseline's energy that `result` saves (negative: it spends more)."""
        return 1 - result.energy_j / self.baseline.energy_j


@dataclass
class Estimates:
    """A trace estimated on every GPU asked for: one CardEstimate each, and the GPUs that could
    not be estimated with why (no profile, or the baseline engine lacking bins)."""

    cards: list[CardEstimate]
    not_estimated: dict[str, MissingPoints]  # the GPU as asked (or as measured) -> why
    stores: list[str]  # the stores the estimates came from
    shipped: bool  # the stores are the profiles shipped with infergy


def estimate_cards(trace: Trace, binned: Binned, model: str, engines: Sequence[str],
                   gpus: Sequence[str] | None = None, stores: list[Path] | None = None,
                   theory_gpu: str | None = None, decoding: str = "greedy") -> Estimates:
    """Every engine on every GPU, from the trace binned once. `gpus`: hardware.py or NVML
    names; None: every GPU with B = max points of the model on one of the engines. `stores`:
    None for the profiles shipped with infergy (those of the model, one store a card).
    `theory_gpu`: the datasheet card of the theoretical baseline (default: each measured one).
    A GPU without points, or whose first engine lacks a bin the trace needs, goes to
    `not_estimated`; when no GPU can be estimated, its error is raised (of several: all)."""
    shipped = stores is None
    if stores is None:
        if not shipped_profiles():
            raise EstimateError("no profile given and none shipped yet: pass --profile FILE, a "
                                "results store written by `infergy sweep` (make run shows one "
                                "from the repository)")
        stores = shipped_profiles(model)
    by_engine = {e: _points_by_gpu(stores, model, e, decoding) for e in engines}
    measured = sorted({g for found in by_engine.values() for g in found})
    if gpus is None:
        asked = {_card(g): g for g in measured}
        if not asked:
            raise _no_points(model, engines, None, stores, shipped)
    else:  # an unknown name is an error before any estimate
        asked = {}
        for g in gpus:
            asked.setdefault(get_gpu(g).name, g)
    cards, why = [], {}
    for card, name in asked.items():
        if not any(_card(g) == card for g in measured):
            why[name] = _no_points(model, engines, name, stores, shipped)
            continue
        try:
            cards.append(_on_card(trace, binned, model, engines, by_engine, card, name,
                                  stores, theory_gpu))
        except MissingPoints as e:
            why[name] = e
    if not cards:
        if len(why) == 1:
            raise next(iter(why.values()))
        raise MissingPoints("no GPU could be estimated:\n" + "\n".join(
            f"{name}: {e}" for name, e in why.items()))
    used = {s for c in cards for s in c.stores}
    return Estimates(cards, why, [str(s) for s in stores if str(s) in used], shipped)


def _on_card(trace: Trace, binned: Binned, model: str, engines: Sequence[str],
             by_engine: dict[str, dict], card: str, asked: str, stores: list[Path],
             theory_gpu: str | None) -> CardEstimate:
    # The stores holding this card: what its messages name, and where to measure the rest.
    held = {p["store"] for found in by_engine.values() for name, points in found.items()
            if _card(name) == card for p in points.values()}
    stores = [s for s in stores if str(s) in held]
    results, unmeasured = [], {}
    for engine in engines:
        try:
            results.append(estimate(trace, binned, _profile(by_engine[engine], stores, model,
                                                            engine, card, asked)))
        except MissingPoints as e:
            if engine == engines[0]:  # the baseline of the savings: nothing to compare
                raise
            unmeasured[engine] = e  # a row saying so; the others are still estimated
    gpu = get_gpu(theory_gpu or card)
    return CardEstimate(results[0].gpu, results, unmeasured, theoretical(binned, model, gpu),
                        gpu, [str(s) for s in stores])


def _no_points(model: str, engines: Sequence[str], gpu: str | None, stores: list[Path],
               shipped: bool) -> MissingPoints:
    """No B = max point of the model on any of the engines (on `gpu`; None: on any GPU)."""
    on = f" on {gpu}" if gpu else ""
    if not shipped:
        return MissingPoints(f"no B = max points of {model}{on} on {', '.join(engines)} in "
                             f"{', '.join(map(str, stores))}: measure them with `infergy sweep "
                             f"paper-bins -m {model} -e {engines[0]} -b max"
                             f"{f' --db {stores[0]}' if len(stores) == 1 else ''}`")
    names = ", ".join(p.name for p in shipped_profiles()) or "none"
    how = _how_to_measure(model, engines[0], gpu, repository=bool(stores))
    own = [p.name for p in stores if gpu and _card_of_file(p, model) == get_gpu(gpu).name]
    what = (f"{own[0]} holds no B = max point of {', '.join(engines)}" if own else
            f"no shipped profile of {model}{on}")
    return MissingPoints(f"{what} (shipped: {names}): {how}")


def _card_of_file(path: Path, model: str) -> str | None:
    """The hardware.py name of the card of a shipped store MODEL-CARD.db (None: unknown)."""
    try:
        return get_gpu(path.name[len(model) + 1:-len(".db")]).name
    except UnknownGpuError:
        return None


def _missing_message(profile: Profile, missing: list[tuple[int, int]]) -> str:
    grids = json.dumps([{"input_tokens": [i], "output_tokens": [o]} for i, o in missing])
    shown = ", ".join(f"I={i} O={o}" for i, o in missing[:12])
    more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    return (f"{profile.model} on {profile.engine} ({profile.gpu}) has no B = max point for "
            f"{len(missing)} bins the trace needs: {shown}{more}. Measure them with a spec "
            f"holding\n  models: [{profile.model}]\n  engines: [{profile.engine}]\n"
            f"  batch_sizes: [max]\n  grids: {grids}\nand `infergy sweep SPEC --db "
            f"{profile.sources[0] if profile.sources else 'FILE'}`")
